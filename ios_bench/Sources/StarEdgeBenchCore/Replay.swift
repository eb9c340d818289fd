// A runner that replays recorded latencies on a virtual clock: the timing loop, the
// protocols and the JSON writer run exactly as on a phone, with known inputs. Used by the
// tests and by `staredge-bench-mac --replay` (which is how the CLI runs off Apple platforms).

import Foundation

/// A clock that only moves when told to (by a `ReplayRunner`).
public final class VirtualClock: NanosecondClock, @unchecked Sendable {
    private var nanoseconds: UInt64
    public init(start: UInt64 = 1_000_000_000) { nanoseconds = start }
    public func now() -> UInt64 { nanoseconds }
    /// Move the clock forward by `ms` milliseconds (rounded to the nanosecond).
    public func advance(ms: Double) { nanoseconds &+= UInt64((ms * 1e6).rounded()) }
}

/// Recorded latencies for one model on one compute-units setting: every inference (cold,
/// warm-up and timed, run after run) takes the next value; the list starts over when used up.
public struct ReplaySeries: Equatable, Sendable {
    public var model: String
    public var backend: String
    public var loadMs: Double
    public var latenciesMs: [Double]

    public init(model: String, backend: String, loadMs: Double = 0, latenciesMs: [Double]) {
        self.model = model
        self.backend = backend
        self.loadMs = loadMs
        self.latenciesMs = latenciesMs
    }
}

/// A recording: a machine description and series of latencies.
public struct ReplayRecording: Equatable, Sendable {
    public var machine: MachineInfo
    public var series: [ReplaySeries]
    public var note: String

    public init(machine: MachineInfo, series: [ReplaySeries], note: String = "") {
        self.machine = machine
        self.series = series
        self.note = note
    }

    /// The series for `model` on `backend`, or nil.
    public func series(model: String, backend: String) -> ReplaySeries? {
        series.first { $0.model == model && $0.backend == backend }
    }

    /// Parse a recording (`"schema": "staredge-ios-replay"`).
    public static func parse(_ text: String, source: String = "recording") throws -> ReplayRecording {
        let root = try JSONValue.parse(text)
        guard root["schema"]?.stringValue == "staredge-ios-replay", root["schema_version"]?.intValue == 1 else {
            throw BenchError.format("\(source) is not a 'staredge-ios-replay' recording (schema_version 1)")
        }
        let m = root["machine"] ?? .object([])
        let machine = MachineInfo(
            label: m["label"]?.stringValue ?? "replay", os: m["os"]?.stringValue ?? "unknown",
            hardware: m["hardware"]?.stringValue ?? "replay", arch: m["arch"]?.stringValue ?? "unknown",
            logicalCpus: m["logical_cpus"]?.intValue, memoryBytes: nil,
            versions: m["versions"]?.objectValue?.compactMap { k, v in v.stringValue.map { (k, $0) } } ?? [])
        var series: [ReplaySeries] = []
        for (i, s) in (root["series"]?.arrayValue ?? []).enumerated() {
            guard let model = s["model"]?.stringValue, let backend = s["backend"]?.stringValue,
                  let values = s["latencies_ms"]?.arrayValue else {
                throw BenchError.format("\(source): series \(i) needs 'model', 'backend' and 'latencies_ms'")
            }
            let latencies = values.compactMap(\.doubleValue)
            guard latencies.count == values.count, !latencies.isEmpty, latencies.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
                throw BenchError.format("\(source): series \(i) (\(model) \(backend)): latencies_ms must be a non-empty list of non-negative numbers")
            }
            series.append(ReplaySeries(model: model, backend: backend, loadMs: s["load_ms"]?.doubleValue ?? 0, latenciesMs: latencies))
        }
        guard !series.isEmpty else { throw BenchError.format("\(source) holds no series") }
        return ReplayRecording(machine: machine, series: series, note: root["note"]?.stringValue ?? "")
    }
}

/// Hands out `ReplayRunner`s that share one position in the series, so that re-created
/// models (ModelBench rounds) continue where the previous one stopped.
public final class ReplayRunnerFactory: RunnerFactory {
    public let series: ReplaySeries
    public let clock: VirtualClock
    fileprivate var cursor = 0
    /// How many models were created (ModelBench re-creates one per round).
    public private(set) var created = 0
    /// How many inferences were run in total.
    public fileprivate(set) var inferences = 0

    public init(series: ReplaySeries, clock: VirtualClock) {
        self.series = series
        self.clock = clock
    }

    public func makeRunner() throws -> InferenceRunner {
        clock.advance(ms: series.loadMs)
        created += 1
        return ReplayRunner(factory: self)
    }

    fileprivate func next() -> Double {
        let v = series.latenciesMs[cursor % series.latenciesMs.count]
        cursor += 1
        inferences += 1
        return v
    }
}

/// Each inference advances the virtual clock by the next recorded latency.
public final class ReplayRunner: InferenceRunner {
    private let factory: ReplayRunnerFactory
    fileprivate init(factory: ReplayRunnerFactory) { self.factory = factory }
    public func infer() throws { factory.clock.advance(ms: factory.next()) }
    public var notes: [String] { ["replayed latencies (no model was run)"] }
}
