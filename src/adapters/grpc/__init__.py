"""gRPC adapters: servicers (protobuf <-> domain), interceptors, health."""
