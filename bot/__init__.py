"""Genie: self-hosted incident alerting whose home is Slack."""
