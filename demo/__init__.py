"""``make demo``: the whole product on this machine, from a checkout (not shipped in the wheel)."""
