//! Tiffany's durable agents.
