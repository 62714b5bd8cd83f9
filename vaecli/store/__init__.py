"""The store: run folders on disk (safetensors and JSON, nothing unpickled) and the run store that finds them."""
