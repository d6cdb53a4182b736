"""Pure domain of Tracker Services: entities, value objects, rules and ports. No I/O."""
