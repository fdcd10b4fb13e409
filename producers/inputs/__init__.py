"""Network inputs of the agent: Prometheus scrape, an OTLP/HTTP receiver and a syslog listener."""
