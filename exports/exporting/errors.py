class ExportError(Exception):
    """An export cannot go on. `code` is stable (clients key on it); the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
