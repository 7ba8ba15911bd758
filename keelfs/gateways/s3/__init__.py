"""The S3 gateway (``keelfs s3``; ``docs/s3.md``).

One module per job: ``errors`` (S3's error codes and their XML), ``xmlio`` (building answers,
parsing requests with ``defusedxml``), ``sigv4`` (AWS Signature Version 4: headers, presigned
URLs, ``aws-chunked`` bodies), ``credentials`` (access keys -> keelfs users), ``store`` (buckets
and keys as keelfs paths; metadata sidecars; atomic writes), ``listing`` (ListObjects' walk),
``buckets``, ``objects``, ``multipart`` (the operation families) and ``app`` (routing, the
server).
"""
