"""What the tests share: servers, the scripted engine, raw sockets, images, /proc, fuzzing budgets."""
