"""The web console served by the gateway."""
