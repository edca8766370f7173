# Sourced by the benches that report CPU per message, per login or per second: what /proc
# says processes used. Times are in clock ticks, `getconf CLK_TCK` to a second.

# cpu_ticks PID… : utime + stime of every thread of the processes, plus those of their
# reaped children (Redis's AOF rewrite), summed; a process gone counts 0.
cpu_ticks() {
    local total=0 p t
    for p in "$@"; do
        t=$(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$p/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
