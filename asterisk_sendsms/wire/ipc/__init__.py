"""The links between the daemon and its child processes, without I/O: framing and the hello with the protocol
version (`framing`), and one typed message per kind, encoded and decoded side by side: HTTP front workers
(`front`) and SMPP children (`smpp`)."""
