"""The shells over the Python API: the command line, the chat session, the OpenAI-compatible server, the doctor report."""
