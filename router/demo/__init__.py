"""The bundled demo services `make run` starts beside the router: hello, world, world-v2."""
