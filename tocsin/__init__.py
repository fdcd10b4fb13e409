"""Tocsin: a production monitoring pipeline on Kafka and ClickHouse."""

__version__ = "0.1.0"
