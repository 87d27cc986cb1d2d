"""Deploy to boards over SSH and measure there.

Modules, in the order a deploy uses them: ``fleet`` (Board, devices.toml, the boards
of one run), ``wheel`` (the edgeq-device wheel a board installs), ``payload`` (what
travels: the programs, file and folder hashes, the folder tar), ``ssh`` (the OpenSSH
transport), ``agent`` and ``watch`` (stdlib-only programs the board's own Python
runs), ``board_run`` (one board, step by step), ``results`` (BoardResult,
DeployReport) and ``orchestrate`` (``deploy()``: the boards concurrently).
"""
