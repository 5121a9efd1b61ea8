// Package governor turns memory use (the process's, or the bytes a queue
// holds) into a memory pressure level, against a limit it finds the way the
// kernel will enforce it.
//
// # What it owns
//
// A byte counter the queue moves with Add/Sub, a sample of the process's
// memory (MeasureProcessMemory), the current limit (and where it came from),
// the level derived from them (LevelNormal, LevelSoft or LevelHard), and two
// goroutines: a watcher that samples, re-detects the limit and wakes
// WaitBelowSoft waiters, and an announcer that logs and calls
// OnLevelChange. It decides nothing about items: the queue applies its
// Policy (Reject, Spill, Block) at LevelHard and waits Delay() on its slow
// path at LevelSoft. Counters of rejected, spilled or delayed items belong
// to the queue.
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
// When Options.Limit is 0 the watcher re-detects the limit every
// RefreshInterval (1s), because vertical autoscaling rewrites memory.max
// under a running process. A failed re-detection keeps the previous limit.
//
// # What counts
//
// Options.Measure says what is weighed against the limit:
//
//   - MeasureProcessMemory, the default when Limit is 0: the Go runtime's
//     memory, moved by Add between samples. A detected limit (a container's
//     memory.max, GOMEMLIMIT, the machine's RAM) bounds the whole process,
//     and the application's own heap shares it with the queue; weighing
//     only the queue's items would let the queue fill 80 % of the limit
//     before warning while the application's heap pushes the process over
//     it. This is what the OpenTelemetry Collector's memory_limiter does.
//   - MeasureQueueBytes, the default when Limit is set: only BytesHeld. An
//     explicit Limit is the queue's own budget.
//   - Either can be chosen against either kind of limit.
//
// The process figure is /memory/classes/total:bytes minus
// /memory/classes/heap/released:bytes from runtime/metrics: all memory the
// runtime has mapped (heap objects, free spans not yet returned, stacks,
// runtime metadata) less the heap pages it has returned to the OS. That is
// the quantity the runtime itself holds under GOMEMLIMIT, the closest thing
// to the process's resident Go memory available without a syscall, and it
// moves with every allocation (unlike /gc/heap/live:bytes, known only at
// the end of a GC cycle). Heap objects alone would miss stacks and free
// spans that are still resident and charged to the cgroup; the cgroup's
// memory.current would count the WAL's page cache, which the kernel
// reclaims before it kills anything. Garbage not yet collected counts:
// until a GC runs it is resident, so this errs on the safe side. Memory
// mapped outside the Go runtime (cgo, other libraries' mmap) is not seen.
// One sample (runtime/metrics.Read of the two metrics) costs about 0.2 µs
// (BenchmarkProcessSample), so the watcher takes one every SampleInterval
// (50 ms) and Refresh takes one on demand.
//
// BytesHeld is what the queue reports through Add/Sub, by Config.SizeOf:
// the items it has taken responsibility for and not yet delivered or
// spilled. Mapped WAL pages are never counted.
//
// The process figure already contains the queue's items, so adding
// BytesHeld to it would count them twice. At each sample the governor keeps
// other = sample - BytesHeld (never negative) and weighs
// Used = BytesHeld + other, i.e. sample + (BytesHeld now - BytesHeld at the
// sample): an Add moves Used at once, between samples.
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
// memory pressure rising", with used/held/process/soft/hard/limit/source/
// measure), repeated while the level stays raised at most once per
// WarnInterval (10s) per level, so reaching Hard is reported even just
// after a Soft warning. Back at Normal, one Info "relieved" follows if a
// warning was logged. Limit changes and failed re-detections are logged
// too. The logger is never the global one; nil discards.
//
// Every log record and every OnLevelChange(from, to) call is made by the
// announcer goroutine, never by the goroutine whose Add caused the change:
// in order (each from is the previous to), one at a time. Add records each
// change in a lock-free ring of 256 entries; if a slow hook lets more than
// that pile up, the oldest are merged (the next call goes from the last
// announced level to the oldest level still in the ring), which keeps
// from/to chaining and only loses intermediate flaps. The hook may call any
// Governor method except Close. A hook or slog handler that blocks delays
// only later announcements: Add, Level, Delay, Stats, Settle, Refresh and
// the waking of WaitBelowSoft (the watcher's job) go on.
//
// # Concurrency
//
// The queue calls Add while its goroutine is pinned to its P, where
// blocking is fatal ("schedule: holding locks"). So:
//
//   - May be called while pinned: Add, Sub, Level, Stretch, Delay, Stats,
//     Limit. Atomic loads, adds and compare-and-swaps only: no mutex, no
//     channel, no slog, no callback, no syscall, no allocation. Level and
//     Stretch (the level word itself: level and change counter) are one load;
//     Add is an atomic add and three loads, plus, when a threshold is
//     crossed, a compare-and-swap loop on the level word (level and a change
//     counter) that re-reads the usage after each store until the two
//     agree, so an Add racing with the store is never left with a stale
//     level, and a compare-and-swap into the transition ring.
//   - Not while pinned: Settle (it never parks, but may send on a buffered
//     channel), Refresh (takes the sampling mutex), WaitBelowSoft (parks),
//     Close (waits for the goroutines).
//
// Nothing pinned needs to call more than Add: level changes are picked up
// by the watcher within SampleInterval even if nobody calls Settle, so
// forgetting Settle costs latency, never a lost wake-up or announcement.
//
// WaitBelowSoft parks on a channel the watcher closes when it sees the
// level at Normal (a broadcast), whoever lowered it: an Add from any
// goroutine changes the level word, and the watcher's next look (at once
// after Settle or Refresh, else within SampleInterval) closes the channel.
// A waiter re-checks the level under the channel's mutex before parking, so
// it never parks at Normal. It returns ctx.Err() when ctx ends and
// ErrClosed after Close.
//
// New starts the watcher and the announcer; Close stops both and waits for
// them, including an OnLevelChange or slog call in progress, after the
// announcer has announced the changes made before Close. Add, Level and
// Delay keep working after Close; later changes are not announced.
//
// # Integration with the queue
//
//   - New: build Options from Config.Memory (Limit, Soft, Hard, Measure,
//     OnLevelChange mapped from Level to the root's Level), Config.Logger.
//     Map errors to ErrInvalidConfig naming Memory.<field>.
//   - Accounting: Add(sum of SizeOf) when items become the queue's
//     responsibility (pinned is fine); Sub when they leave memory (Send
//     succeeded, went to OnDrop, or were spilled to the WAL — spilled bytes
//     are on disk, not in memory). One call per chunk, not per item. After
//     a Sub on a sender, or after the unpin that follows a pinned Add,
//     Settle() so waiters and announcements follow at once.
//   - Slow path (ring full / handoff), unpinned, with the level Add
//     returned: Normal: proceed. Soft: sleep Delay() then proceed (items
//     are accepted). Hard: Reject → ErrFull; Spill → write to the WAL
//     instead of memory; Block → WaitBelowSoft(ctx) where ctx ends at Stop,
//     then retry. A spill that fails counts for the rest of the level's
//     Stretch: the batch it left in memory is past Hard until the level
//     falls.
//   - Background goroutine: Refresh() on its tick, optional (the watcher
//     samples anyway); it samples now and wakes the watcher.
//   - Stop: Close(), so producers blocked in WaitBelowSoft return ErrClosed
//     (mapped to the queue's ErrClosed) and the goroutines end.
//   - Level values: LevelNormal, LevelSoft, LevelHard are 0, 1, 2 like the
//     root package's, so the mapping is a conversion. Level marshals as its
//     name (MarshalText/UnmarshalText).
//   - Stats: Stats().BytesHeld and Level feed the queue's gauges.
package governor
