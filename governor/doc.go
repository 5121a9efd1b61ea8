// Package governor turns the bytes a queue holds into a memory pressure
// level, against a limit it finds the way the kernel will enforce it.
//
// # What it owns
//
// A byte counter the queue moves with Add/Sub, an optional sample of the Go
// heap, the current limit (and where it came from), and the level derived
// from them: LevelNormal, LevelSoft or LevelHard. It decides nothing about
// items: the queue applies its Policy (Reject, Spill, Block) at LevelHard and
// waits Delay() on its slow path at LevelSoft. Counters of rejected, spilled
// or delayed items belong to the queue.
//
// # The limit
//
// Options.Limit when set (never re-read). Otherwise DetectLimit takes the
// tightest of:
//
//   - cgroup v2: memory.max of the process's cgroup and of every ancestor up
//     to the mount root ("max" = none). In v2 a parent's limit bounds its
//     children, so a tighter parent (a pod around a container) wins.
//   - cgroup v1: memory.limit_in_bytes of the process's memory cgroup and
//     memory.stat's hierarchical_memory_limit (the kernel's own minimum over
//     the ancestors, when use_hierarchy is on). Ancestors are not walked: with
//     use_hierarchy off their limits do not apply. Values of 4 EiB and more
//     mean none: v1 prints "unlimited" as math.MaxInt64 rounded down to the
//     page size (9223372036854771712 with 4 KiB pages).
//   - GOMEMLIMIT, read as debug.SetMemoryLimit(-1) (math.MaxInt64 = none), so
//     a limit set by the program counts too.
//   - physical memory: /proc/meminfo MemTotal, else sysinfo(2).
//
// Which cgroup files to read comes from /proc/self/mountinfo (every cgroup2
// mount, and every v1 mount with the memory controller) and
// /proc/self/cgroup (the process's path in each hierarchy), the path mapped
// through the mount's root (containers without a cgroup namespace mount
// their own cgroup as the root). Hybrid hosts mount both: v1 controllers
// under /sys/fs/cgroup/<controller> and a controller-less v2 hierarchy at
// /sys/fs/cgroup/unified; both are read and a memory.max that does not exist
// there is just a missing file. Without a readable mountinfo the
// conventional mount points are tried.
//
// Every path is read under Options.Root (DetectLimit's root), so tests point
// it at fabricated trees (testdata/). No file can fail detection: missing,
// unreadable, oversized or garbage files become Findings in the returned
// Limit, each with a Note saying why it imposes nothing, next to the winning
// Source and Path. DetectLimit fails (ErrNoLimit) only when nothing at all,
// not even physical memory, yields a limit.
//
// The limit is re-detected by Refresh at most once per RefreshInterval (1s),
// because vertical autoscaling rewrites memory.max under a running process.
// A failed re-detection keeps the previous limit.
//
// # What counts
//
// Used = BytesHeld + (with IncludeHeap) the rest of the Go heap.
//
// BytesHeld is what the queue reports through Add/Sub, by Config.SizeOf: the
// items it has taken responsibility for and not yet delivered or spilled.
// Mapped WAL pages are never counted: they are page cache, reclaimable by the
// kernel, and the queue does not Add them.
//
// IncludeHeap samples /memory/classes/heap/objects:bytes from runtime/metrics
// on each Refresh. That metric is the memory occupied by heap objects, live
// or dead-but-unswept: it moves with every allocation between GCs (unlike
// /gc/heap/live:bytes, known only at the end of a cycle) and excludes free
// spans the runtime keeps for reuse. Counting not-yet-collected garbage errs
// on the safe side: until a GC runs, that memory is resident and charged to
// the cgroup; with GOMEMLIMIT set the GC collects it before it reaches the
// limit. The heap already contains the queue's items, so adding BytesHeld
// to it would count them twice: the governor keeps other = heap - BytesHeld
// as of the sample (never negative) and uses BytesHeld + other, which also
// makes Add's effect immediate between samples.
//
// # Levels and hysteresis
//
// With limit L, thresholds Soft (0.80) and Hard (0.95) and margin
// Hysteresis (0.05), all fractions of L:
//
//	level    entered when            left when
//	Normal   Used < Soft·L and,      -
//	         coming down, below (Soft-Hysteresis)·L
//	Soft     Used >= Soft·L          Used < (Soft-Hysteresis)·L  → Normal
//	                                 Used >= Hard·L              → Hard
//	Hard     Used >= Hard·L          Used < (Hard-Hysteresis)·L  → Soft (or Normal)
//
// so with the defaults Soft is entered at 80 % and left below 75 %, Hard
// entered at 95 % and left below 90 %. Levels jump directly (Normal to Hard,
// Hard to Normal) when usage does. The margin stops a queue hovering at a
// threshold from flapping between policies on every item.
//
// # Delay
//
// Delay() is what the queue's slow path waits at the current pressure: 0 at
// Normal; at Soft, MinDelay (50µs) at the soft threshold growing linearly to
// MaxDelay (2ms) at the hard one, so producers are slowed more the closer
// the queue gets to rejecting or spilling; MaxDelay at Hard (for a policy
// that wants to pace, e.g. Spill). Inside the hysteresis band below the soft
// threshold it is MinDelay.
//
// # Warnings and OnLevelChange
//
// Each rise in level logs a warning through Options.Logger ("vinequeue:
// memory pressure rising", with used/held/heap/soft/hard/limit/source), and
// Refresh repeats it while the level stays raised, at most once per
// WarnInterval (10s) per level, so reaching Hard is reported even just after
// a Soft warning. Back at Normal, one Info "relieved" follows if a warning
// was logged. The logger is never the global one; nil discards.
//
// OnLevelChange(from, to) is called for every change, in order (each from is
// the previous to), one call at a time, on the goroutine whose Add or Refresh
// caused it (or whichever goroutine is already reporting), with no governor
// lock held: the hook may call any Governor method, Add included, but must
// not block, since it delays that goroutine. If more than 256 changes are
// waiting behind a slow hook, the newest are merged (from of the first, to
// of the last).
//
// # Concurrency contract
//
// Every method is safe for concurrent use. Level is one atomic load; Add is
// an atomic add plus three loads, and takes the governor mutex only when a
// threshold is crossed, where it re-reads the usage after storing the new
// level until the two agree: an Add that raced with the store is never left
// with a stale level. Delay and Stats are a few atomic loads. Refresh
// serializes with itself. WaitBelowSoft parks on a channel that the
// transition to Normal closes (a broadcast): no polling, no sleeping; it
// returns ctx.Err() when ctx ends and ErrClosed after Close. The governor
// starts no goroutine; Run (optional) is the caller's, and returns when its
// context ends or Close is called.
//
// # Integration with the queue
//
//   - New: build Options from Config.Memory (Limit, Soft, Hard, IncludeHeap,
//     OnLevelChange mapped from Level to the root's Level), Config.Logger.
//     Map errors to ErrInvalidConfig naming Memory.<field>.
//   - Accounting: Add(sum of SizeOf) when items become the queue's
//     responsibility off the fast path (a ring segment handed to a shard,
//     the consumer's drain of a ring); Sub when they leave memory (Send
//     succeeded, went to OnDrop, or were spilled to the WAL — spilled bytes
//     are on disk, not in memory). One call per chunk, not per item.
//   - Slow path (ring full / handoff), with the level Add returned:
//     Normal: proceed. Soft: sleep Delay() then proceed (items are accepted).
//     Hard: Reject → ErrFull; Spill → write to the WAL instead of memory;
//     Block → WaitBelowSoft(ctx) where ctx ends at Stop, then retry.
//   - Background goroutine: Refresh() on its tick (~every second is enough;
//     calling it more often only re-samples the heap).
//   - Stop: Close(), so producers blocked in WaitBelowSoft return ErrClosed
//     (mapped to the queue's ErrClosed), and so a Run goroutine ends.
//   - Level values: LevelNormal, LevelSoft, LevelHard are 0, 1, 2 like the
//     root package's, so the mapping is a conversion.
//   - Stats: Stats().BytesHeld and Level feed the queue's gauges.
package governor
