"""Legacy exception-handling test material: hand-written WAT, a random program generator, node runners."""
