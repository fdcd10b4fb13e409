"""The stream processor: windows, rules, the alert state machine and its HTTP service."""
