"""Deploy to boards over SSH and measure there.

Modules, in the order a deploy uses them: ``fleet`` (Board, devices.toml, the boards
of one run), ``inventory`` + ``inventory_static`` + ``hostpattern`` (Ansible inventories
and ``--limit``), ``resume`` (the boards a ``--resume`` runs again), ``wheel`` (the edgeq-device wheel a board installs), ``payload`` (what
travels: the programs, file and folder hashes, the folder tar), ``ssh`` (the OpenSSH
transport), ``agent`` and ``watch`` (stdlib-only programs the board's own Python
runs), ``board_run`` (one board, step by step), ``results`` (BoardResult,
DeployReport, each board's state), ``fleetrun`` (the boards at bounded ``forks``,
retries, counts) and ``orchestrate`` (``deploy()``).
"""
