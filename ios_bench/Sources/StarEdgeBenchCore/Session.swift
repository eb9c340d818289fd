// One benchmark session: every chosen model on every chosen compute-units setting under
// one protocol, collected into one result document. The app and the Mac tool both use it;
// only the runner factory differs (CoreML on Apple platforms, replay elsewhere).

import Foundation

/// Where a session is, for a progress bar.
public struct SessionProgress: Sendable {
    /// Index of the current (model, compute units) pair and how many there are.
    public let item: Int
    public let items: Int
    public let model: String
    public let units: ComputeUnits
    public let run: BenchProgress
    /// Fraction of the whole session finished (0...1).
    public var fraction: Double { (Double(item) + run.fraction) / Double(max(items, 1)) }
}

/// Makes a runner factory for one bundled model on one compute-units setting, and says
/// which runtime version ran it. Throwing means "cannot run here": the result is recorded
/// with status `unavailable` and the message.
public protocol RunnerProvider {
    func factory(for model: BundledModel, units: ComputeUnits) throws -> RunnerFactory
    var runtimeVersion: String? { get }
}

/// Runs a protocol over models x compute units and builds the document.
public struct BenchSession {
    public var tool: String
    public var machine: MachineInfo
    public var proto: BenchProtocol
    public var rewrite: String
    public var runner: ProtocolRunner
    /// Timestamps (injectable so that tests get a fixed document).
    public var now: () -> String

    public init(tool: String, machine: MachineInfo, proto: BenchProtocol, rewrite: String = "auto",
                runner: ProtocolRunner = ProtocolRunner(), now: @escaping () -> String = { utcTimestamp() }) {
        self.tool = tool
        self.machine = machine
        self.proto = proto
        self.rewrite = rewrite
        self.runner = runner
        self.now = now
    }

    /// Measure every model on every setting, in that order. A cancel stops the session:
    /// the measurement under way is kept as `interrupted`, the document is marked
    /// incomplete, and what was not reached is not recorded.
    public func run(models: [BundledModel], units: [ComputeUnits], provider: RunnerProvider,
                    cancel: CancellationToken? = nil, progress: ((SessionProgress) -> Void)? = nil,
                    onResult: ((BenchResultRecord) -> Void)? = nil) throws -> BenchDocument {
        try proto.validate()
        var doc = BenchDocument(tool: tool, createdUTC: now())
        let machineId = doc.addMachine(machine)
        let protoId = doc.addProtocol(proto, rewrite: rewrite)
        let pairs = models.flatMap { m in units.map { (m, $0) } }
        for (index, (model, unit)) in pairs.enumerated() {
            if cancel?.isCancelled == true { break }
            var result: BenchResultRecord
            do {
                let factory = try provider.factory(for: model, units: unit)
                let m = try runner.measure(proto, factory: factory, cancel: cancel) { run in
                    progress?(SessionProgress(item: index, items: pairs.count, model: model.name, units: unit, run: run))
                }
                result = BenchResultRecord.from(m, model: model.name, units: unit, machine: machineId, proto: protoId, measuredUTC: now())
            } catch let error as BenchError {
                result = BenchResultRecord(model: model.name, backend: unit.backend, machine: machineId, proto: protoId, measuredUTC: now())
                result.device = unit.device
                if case .invalidProtocol = error { throw error }
                result.status = "unavailable"
                result.error = error.description
            } catch {
                result = BenchResultRecord(model: model.name, backend: unit.backend, machine: machineId, proto: protoId, measuredUTC: now())
                result.device = unit.device
                result.status = "error"
                result.error = String(describing: error)
            }
            if model.isLanguageModel {
                // latency is per decoded token: add the throughput readers look for
                for i in result.runs.indices where result.runs[i].meanMs > 0 {
                    result.runs[i].extra.append(("decode_tokens_per_s", .double(Statistics.roundDecimal(1000 / result.runs[i].meanMs, 2))))
                }
                if let ms = result.latencyMs, ms > 0 {
                    result.notes.append("decode: \(Statistics.roundDecimal(1000 / ms, 1)) tokens/s (latency_ms is per decoded token)")
                }
            }
            result.variant = model.variant
            result.precision = model.precision
            result.rewrites = model.rewrites
            result.paramsM = model.paramsM
            result.macsM = model.macsM
            result.runtimeVersion = provider.runtimeVersion
            doc.results.append(result)
            onResult?(result)
            if result.status == "interrupted" { break }
        }
        if cancel?.isCancelled == true {
            doc.complete = false
            doc.notes.append("stopped by the user: results of the measurements finished before that are kept")
        }
        return doc
    }
}

/// Runner factories from a replay recording, all on one virtual clock.
public final class ReplayProvider: RunnerProvider {
    public let recording: ReplayRecording
    public let clock: VirtualClock
    public var runtimeVersion: String? { "replay" }

    public init(recording: ReplayRecording, clock: VirtualClock) {
        self.recording = recording
        self.clock = clock
    }

    public func factory(for model: BundledModel, units: ComputeUnits) throws -> RunnerFactory {
        guard let s = recording.series(model: model.name, backend: units.backend) else {
            throw BenchError.unsupported("the recording has no latencies for \(model.name) on \(units.backend)")
        }
        return ReplayRunnerFactory(series: s, clock: clock)
    }
}
