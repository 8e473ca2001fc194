"""The broker: game state machine (pure), journal, sequencer loop and catch-up service."""
