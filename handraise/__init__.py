"""handraise: raise your hand on a Twilio phone conference."""

__version__ = "0.1.0"
