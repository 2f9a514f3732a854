"""gRPC plumbing: generated stubs, conversions and channel/server options."""
