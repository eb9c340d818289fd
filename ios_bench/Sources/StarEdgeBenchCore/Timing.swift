// The timing loop: a cold inference, warm-up, then timed inferences, each read with a
// monotonic clock; and the protocol loop around it (runs, model re-creation, reduction).
// It knows nothing about CoreML: it drives an `InferenceRunner`.

import Foundation
#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One loaded model with a fixed input, ready to be timed.
public protocol InferenceRunner: AnyObject {
    /// One batch-1 inference on the runner's fixed input; returns when the result is ready.
    func infer() throws
    /// Called before every inference, outside the timed interval (an LM runner starts a new
    /// stream here when its context is full). Default: nothing.
    func prepareNext() throws
    /// Keys recorded with each run beyond the bench format (e.g. LM prefill figures);
    /// asked once at the end of the run. Default: none.
    func runExtras() -> [(String, JSONValue)]
    /// Free-text notes for the result (e.g. what the model description said). Default: none.
    var notes: [String] { get }
}

extension InferenceRunner {
    public func prepareNext() throws {}
    public func runExtras() -> [(String, JSONValue)] { [] }
    public var notes: [String] { [] }
}

/// Loads a model: called once per run when the protocol re-creates the model, else once.
public protocol RunnerFactory {
    func makeRunner() throws -> InferenceRunner
}

/// A clock reading in nanoseconds.
public protocol NanosecondClock {
    func now() -> UInt64
}

/// The monotonic clock with the finest resolution: `CLOCK_UPTIME_RAW` on Apple platforms
/// (what `mach_absolute_time` and `CACurrentMediaTime` read), `CLOCK_MONOTONIC` elsewhere.
public struct MonotonicClock: NanosecondClock {
    public init() {}
    public func now() -> UInt64 {
        #if canImport(Darwin)
        return clock_gettime_nsec_np(CLOCK_UPTIME_RAW)
        #else
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        #endif
    }
}

/// CPU time of this process (all threads), for the observed parallelism (`cpu_utilisation`).
public struct ProcessCPUClock: NanosecondClock {
    public init() {}
    public func now() -> UInt64 {
        #if canImport(Darwin)
        return clock_gettime_nsec_np(CLOCK_PROCESS_CPUTIME_ID)
        #else
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
        #endif
    }
}

/// Set from any thread to stop a measurement after the current inference.
public final class CancellationToken: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false
    public init() {}
    public func cancel() { lock.lock(); cancelled = true; lock.unlock() }
    public var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }
}

/// A run was cancelled; `partial` summarises the inferences timed before that (or nil).
public struct RunInterrupted: Error {
    public let partial: RunStats?
}

private let nsPerMs = 1e6

/// The timing loop. Clocks are injectable so that tests can use a fake one.
public struct TimingLoop {
    public var clock: NanosecondClock
    public var cpuClock: NanosecondClock?

    public init(clock: NanosecondClock = MonotonicClock(), cpuClock: NanosecondClock? = ProcessCPUClock()) {
        self.clock = clock
        self.cpuClock = cpuClock
    }

    /// Time one run: the first inference on its own (`first_ms`), `warmup` untimed, then
    /// `iters` timed one by one. `onProgress(k)` runs after each timed inference, outside
    /// the timed interval. When `cancel` is set, throws `RunInterrupted` with what was timed.
    public func timeRun(_ runner: InferenceRunner, warmup: Int, iters: Int, trim: (low: Int, high: Int)? = nil,
                        keepSamples: Bool = false, cancel: CancellationToken? = nil,
                        onProgress: ((Int) -> Void)? = nil, extra: [(String, JSONValue)] = []) throws -> RunStats {
        try runner.prepareNext()
        var t0 = clock.now()
        try runner.infer()
        let firstMs = Double(clock.now() &- t0) / nsPerMs
        for _ in 0..<warmup {
            if cancel?.isCancelled == true { throw RunInterrupted(partial: nil) }
            try runner.prepareNext()
            try runner.infer()
        }
        var samples: [Double] = []
        samples.reserveCapacity(iters)
        let cpu0 = cpuClock?.now()
        let wall0 = clock.now()
        for i in 0..<iters {
            if cancel?.isCancelled == true {
                var partial: RunStats? = nil
                if !samples.isEmpty {
                    let canTrim = trim.map { $0.low + $0.high < samples.count } ?? false
                    partial = try RunStats.fromSamples(samples, firstMs: firstMs, trim: canTrim ? trim : nil, warmup: warmup,
                                                       interrupted: true, keepSamples: keepSamples,
                                                       extra: extra + runner.runExtras())
                }
                throw RunInterrupted(partial: partial)
            }
            try runner.prepareNext()
            t0 = clock.now()
            try runner.infer()
            let t1 = clock.now()
            samples.append(Double(t1 &- t0) / nsPerMs)
            onProgress?(i + 1)
        }
        let wall = clock.now() &- wall0
        var utilisation: Double? = nil
        if let cpuClock, let cpu0, wall > 0 {
            utilisation = Statistics.roundDecimal(Double(cpuClock.now() &- cpu0) / Double(wall), 3)
        }
        return try RunStats.fromSamples(samples, firstMs: firstMs, trim: trim, warmup: warmup, cpuUtilisation: utilisation,
                                        keepSamples: keepSamples, extra: extra + runner.runExtras())
    }
}

/// Where a measurement is: run `run` (0-based) of `runs`, `done` of `iters` timed.
public struct BenchProgress: Sendable {
    public let run: Int
    public let runs: Int
    public let done: Int
    public let iters: Int
    /// Fraction of the whole protocol finished (0...1).
    public var fraction: Double { (Double(run) + Double(done) / Double(max(iters, 1))) / Double(max(runs, 1)) }
}

/// Every run of one model under one protocol, and the figure the protocol reports.
public struct Measurement {
    public var runs: [RunStats] = []
    public var latencyMs: Double? = nil
    public var reportedRun: Int? = nil
    /// `ok`, `interrupted` (cancelled: the runs so far are kept) or `error`.
    public var status: String = "ok"
    public var error: String? = nil
    public var notes: [String] = []
}

/// The figure a protocol reports from its runs and the index of the reported run:
/// `last` reports the last run's statistic, `mean` the mean of the per-run statistic
/// (no single run: index nil). Rounded to 5 decimals, as the Python harness does.
public func reportedLatency(_ runs: [RunStats], _ proto: BenchProtocol) throws -> (Double, Int?) {
    guard let last = runs.last else { throw BenchError.invalidInput("no runs to report") }
    switch proto.reduce {
    case .last:
        return (Statistics.roundDecimal(last.statistic(proto.statistic), 5), runs.count - 1)
    case .mean:
        return (Statistics.roundDecimal(try Statistics.mean(runs.map { $0.statistic(proto.statistic) }), 5), nil)
    }
}

/// Runs a protocol: `repeats` runs, loading the model again before each when the protocol
/// says so (its load time is recorded as `load_ms` in the run), never inside a timing.
public struct ProtocolRunner {
    public var loop: TimingLoop
    public var keepSamples: Bool

    public init(loop: TimingLoop = TimingLoop(), keepSamples: Bool = false) {
        self.loop = loop
        self.keepSamples = keepSamples
    }

    /// Measure; a runner error ends this measurement with status `error` (the runs so far
    /// are kept), a cancellation with status `interrupted`. Throws only for a bad protocol.
    public func measure(_ proto: BenchProtocol, factory: RunnerFactory, cancel: CancellationToken? = nil,
                        progress: ((BenchProgress) -> Void)? = nil) throws -> Measurement {
        try proto.validate()
        var m = Measurement()
        var runner: InferenceRunner? = nil
        defer { runner = nil }
        do {
            for index in 0..<proto.repeats {
                if cancel?.isCancelled == true { throw RunInterrupted(partial: nil) }
                var extra: [(String, JSONValue)] = []
                if runner == nil || proto.recreatePerRun {
                    runner = nil  // release the previous model before loading the next
                    let t0 = loop.clock.now()
                    runner = try factory.makeRunner()
                    extra.append(("load_ms", .double(Statistics.nanosecondRounded(Double(loop.clock.now() &- t0) / nsPerMs))))
                    if index == 0 { m.notes = runner!.notes }
                }
                progress?(BenchProgress(run: index, runs: proto.repeats, done: 0, iters: proto.iters))
                let run = try loop.timeRun(
                    runner!, warmup: proto.warmup, iters: proto.iters, trim: proto.trim, keepSamples: keepSamples,
                    cancel: cancel, onProgress: { k in progress?(BenchProgress(run: index, runs: proto.repeats, done: k, iters: proto.iters)) },
                    extra: extra)
                m.runs.append(run)
            }
        } catch let stop as RunInterrupted {
            if let partial = stop.partial { m.runs.append(partial) }
            m.status = "interrupted"
        } catch {
            m.status = "error"
            m.error = String(describing: error)
        }
        if !m.runs.isEmpty && m.status != "error" {
            let (latency, reported) = try reportedLatency(m.runs, proto)
            m.latencyMs = latency
            m.reportedRun = reported
        }
        return m
    }
}
