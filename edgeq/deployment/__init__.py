"""Deploy to boards over SSH: the fleet, the connection, the wheel, the agent on the board."""
