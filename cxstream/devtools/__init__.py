"""The tools around the product: the demo and its soak test, the benchmark, the network simulator
and its load producer, and the embedded broker and Redis they run on. The dataflow, the
detectors, the actions and the dashboard never import them."""
