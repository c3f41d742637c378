"""mergecl methods: a pure merging core (merging, fisher, gpm) under one Avalanche plugin per method."""
