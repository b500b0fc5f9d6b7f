"""The test service harness: real Postgres, Apache Kafka (KRaft), S3 (moto's server) and Iceberg
catalogs, chosen in this order for each service:

1. an address given in the environment (``ATOMIC_PUBLISH_TEST_<SERVICE>_...``, see README "Testing");
2. Docker through testcontainers, when a Docker engine answers;
3. a local process that the harness starts on 127.0.0.1 and stops at the end of the session.

No in-memory fakes: every service here is a real server reached over the network.
"""
