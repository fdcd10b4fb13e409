"""Agents that ship logs, metrics and health events to Kafka."""
