# free_port: sets FREE_PORT to a loopback TCP port that nothing uses and that this shell has
# not handed out before. Call it directly, not in $(...), or the record of ports handed out
# is lost with the subshell.
#
# Ports come from 20000-32767, below Linux's ephemeral range (32768-60999 by default), so an
# outgoing connection (ours to Postgres, or another process's) cannot take the port as its
# local end between the pick and the server's bind. A port is handed out only when a bind on
# it succeeds, which also fails for a port some connection already holds as its local end.
FREE_PORT_TAKEN=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12768))
        case "$FREE_PORT_TAKEN" in *" $p "*) continue ;; esac
        if python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null; then
            FREE_PORT_TAKEN="$FREE_PORT_TAKEN$p "
            FREE_PORT=$p
            return
        fi
    done
}
