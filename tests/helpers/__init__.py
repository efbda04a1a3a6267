"""Helpers shared by the lab test suites: module runs on a lab host, playbooks, kernel snapshots."""
