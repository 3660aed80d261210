# Shared by the bench scripts (sourced). `warm PATH...` reads every file under the paths, so
# the timed step that follows finds its input in the page cache. Needed on this machine: a
# DAMON "pageout" scheme (/sys/kernel/mm/damon/admin/kdamonds/0) evicts file pages left
# untouched for about a minute, so whichever tool ran last found its input warm and the other
# read from disk (measured: push 9.8 s cold vs 6.1 s warm for the same bundle). Every tool's
# input is warmed the same way right before its step.
warm() {
  find "$@" -type f -print0 2>/dev/null | xargs -0 -r cat > /dev/null
}
