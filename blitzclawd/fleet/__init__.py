"""The fleet: pool servers (cloud-init), OpenClaw instance configuration, personas."""
