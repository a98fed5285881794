"""The pure core: protocol, versions, rules decisions. No I/O, no clock, no asyncio."""
