"""Spark 4 finds Python data sources in top-level modules named ``pyspark_*`` that define
``DefaultSource``: this one makes ``df.write.format("atomic_publish")`` work with no registration
(the implementation is ``publishers.spark``; pip install 'atomic-publish[spark]')."""

from atomic_publish.publishers.spark import AtomicPublishDataSource as DefaultSource

__all__ = ["DefaultSource"]
