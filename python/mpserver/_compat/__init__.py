"""mpservice's names on mpserver: the ``install()`` import hook, and its inheritance by child processes."""

#: Set to ``'1'`` by ``install()``; inherited by the processes started after it.
ENV_VAR = 'MPSERVER_INSTALL'
