"""Gateways: processes that speak another protocol to the outside and are clients of the
cluster inside (DESIGN 2.15). They keep no state of their own, so any number may run behind a
load balancer: they add protocol, not state. ``s3``: the S3 API; ``webhdfs``: Hadoop's
WebHDFS REST API."""
