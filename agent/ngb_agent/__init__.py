"""NanoGridBot's agent runner, the program inside each group's container (started by
agent/runner.py): the runner side of docs/agent-protocol.md.

* session.py: the Runner (control socket, handshake, the pumps between the host and the agent);
* agent_cli.py, early_cli.py: the Claude Code CLI and its early start while the SDK imports;
* batches.py: which host batches a turn answered; prescript.py: a task's pre-script;
* host.py: model forwarder (127.0.0.1:PORT -> model.sock) and the requests.sock client;
  host_tools.py: the host's tools as the in-process MCP server ``ngb``;
* wire.py: JSON lines over asyncio; protocol.py: the frames (a link to ngb/protocol.py, the one
  definition the daemon uses too); settings.py: the environment and fixed CLI setup.

Python 3.11 stdlib plus claude_agent_sdk, attrs and cattrs; nothing else of ngb.
"""
