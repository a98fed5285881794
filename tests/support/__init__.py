"""Test support: fixture Go modules, a real fixture GOPROXY server, a go command runner."""
