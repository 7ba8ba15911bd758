"""Gateways: stateless processes that speak another protocol (S3, later WebHDFS) and act on the
cluster through the client library (DESIGN 2.15): they add protocol, not state."""
