/// How a latency is measured, as data. The keys and their meaning are those of StarEdge's
/// Python `Protocol` (staredge/bench/protocols.py, docs/bench-format.md): each of `repeats`
/// runs is one cold inference (reported as `first_ms`), `warmup` untimed inferences, then
/// `iters` timed ones; `trimLow`/`trimHigh` drop that many fastest/slowest timings per run
/// for the trimmed mean; `reduce` reports the last run or the mean over runs;
/// `recreatePerRun` loads the model again before every run (ModelBench's rounds).
public struct BenchProtocol: Equatable, Sendable {
    /// Report the last run, or the mean of the per-run statistic over all runs.
    public enum Reduce: String, Sendable { case last, mean }

    public var name: String
    public var description: String
    public var source: String
    public var warmup: Int
    public var iters: Int
    public var repeats: Int
    public var reduce: Reduce
    public var statistic: StatisticName
    public var trimLow: Int
    public var trimHigh: Int
    public var recreatePerRun: Bool
    /// Which keys differ from the preset (recorded, and part of the protocol id).
    public var overrides: [String]

    public init(name: String, description: String, source: String = "", warmup: Int, iters: Int, repeats: Int,
                reduce: Reduce, statistic: StatisticName, trimLow: Int = 0, trimHigh: Int = 0,
                recreatePerRun: Bool = false, overrides: [String] = []) {
        self.name = name
        self.description = description
        self.source = source
        self.warmup = warmup
        self.iters = iters
        self.repeats = repeats
        self.reduce = reduce
        self.statistic = statistic
        self.trimLow = trimLow
        self.trimHigh = trimHigh
        self.recreatePerRun = recreatePerRun
        self.overrides = overrides
    }

    /// MobileOne's ModelBench app (what the StarNet paper used on iPhone): 20 rounds of 50
    /// inferences, 1 warm-up per round, the model re-created each round, the 10 fastest and
    /// 10 slowest of a round dropped; the mean of the per-round trimmed means is reported.
    public static let modelBench = BenchProtocol(
        name: "modelbench",
        description: "MobileOne ModelBench: 20 rounds x 50 inferences, 1 warm-up per round, 10 lowest and 10 highest dropped",
        source: "MobileOne ModelBench iOS app defaults (apple/ml-mobileone)",
        warmup: 1, iters: 50, repeats: 20, reduce: .mean, statistic: .trimmedMean,
        trimLow: 10, trimHigh: 10, recreatePerRun: true)

    /// The StarNet paper's iPhone practice: 50 warm-up + 500 timed, the whole run three
    /// times (the first is consistently a little faster), the last run reported.
    public static let paperIPhone = BenchProtocol(
        name: "ios",
        description: "StarNet iOS practice: the whole measurement run three times, the last run reported",
        source: "StarNet paper, supplementary Section A.3",
        warmup: 50, iters: 500, repeats: 3, reduce: .last, statistic: .mean)

    /// The presets by name, in the order the app and the CLI list them.
    public static let presets: [BenchProtocol] = [.modelBench, .paperIPhone]

    /// The preset called `name`.
    public static func preset(named name: String) throws -> BenchProtocol {
        guard let p = presets.first(where: { $0.name == name }) else {
            throw BenchError.invalidProtocol("unknown protocol '\(name)': choose one of \(presets.map(\.name).joined(separator: ", "))")
        }
        return p
    }

    /// (low, high) dropped per run, or nil when nothing is dropped.
    public var trim: (low: Int, high: Int)? { (trimLow != 0 || trimHigh != 0) ? (trimLow, trimHigh) : nil }

    /// Throws `invalidProtocol` for settings that cannot be measured.
    public func validate() throws {
        if warmup < 0 { throw BenchError.invalidProtocol("warm-up must be >= 0, got \(warmup)") }
        if iters < 1 { throw BenchError.invalidProtocol("iterations must be >= 1, got \(iters)") }
        if repeats < 1 { throw BenchError.invalidProtocol("repeats must be >= 1, got \(repeats)") }
        if trimLow < 0 || trimHigh < 0 || trimLow + trimHigh >= iters {
            throw BenchError.invalidProtocol(
                "cannot drop \(trimLow) lowest and \(trimHigh) highest of \(iters) timed inferences per run: raise the iterations or lower the trim")
        }
    }

    /// A copy with the given settings changed; a value equal to the preset's is not an
    /// override (as in Python, so ids stay short). The result is validated.
    public func withOverrides(warmup: Int? = nil, iters: Int? = nil, repeats: Int? = nil,
                              reduce: Reduce? = nil, statistic: StatisticName? = nil) throws -> BenchProtocol {
        var copy = self
        var changed: [String] = []
        if let v = warmup, v != self.warmup { copy.warmup = v; changed.append("warmup") }
        if let v = iters, v != self.iters { copy.iters = v; changed.append("iters") }
        if let v = repeats, v != self.repeats { copy.repeats = v; changed.append("repeats") }
        if let v = reduce, v != self.reduce { copy.reduce = v; changed.append("reduce") }
        if let v = statistic, v != self.statistic { copy.statistic = v; changed.append("statistic") }
        copy.overrides = Array(Set(overrides + changed)).sorted()
        try copy.validate()
        return copy
    }

    /// `modelbench` for a preset as is; `modelbench[iters=100,repeats=5]` when overridden
    /// (the rule of Python's `protocol_id`).
    public var id: String {
        guard !overrides.isEmpty else { return name }
        let parts = overrides.map { key -> String in
            let value: String
            switch key {
            case "warmup": value = String(warmup)
            case "iters": value = String(iters)
            case "repeats": value = String(repeats)
            case "reduce": value = reduce.rawValue
            case "statistic": value = statistic.rawValue
            default: value = "?"
            }
            return "\(key)=\(value)"
        }
        return "\(name)[\(parts.joined(separator: ","))]"
    }

    /// The protocol record of the bench format. `threads` is null (CoreML picks its own),
    /// `device` is "auto" (the compute-units setting of each result says what was allowed),
    /// `backends` lists the four CoreML compute-units settings, `rewrite` is what the
    /// bundled packages were exported with.
    public func toJSON(rewrite: String = "auto") -> JSONValue {
        .object([
            ("name", .string(name)),
            ("description", .string(description)),
            ("backends", .array(ComputeUnits.allCases.map { .string($0.backend) })),
            ("device", .string("auto")),
            ("threads", .null),
            ("warmup", .int(warmup)),
            ("iters", .int(iters)),
            ("repeats", .int(repeats)),
            ("reduce", .string(reduce.rawValue)),
            ("statistic", .string(statistic.rawValue)),
            ("trim_low", .int(trimLow)),
            ("trim_high", .int(trimHigh)),
            ("recreate_per_run", .bool(recreatePerRun)),
            ("rewrite", .string(rewrite)),
            ("source", .string(source)),
            ("overrides", .array(overrides.map { .string($0) })),
        ])
    }
}

/// CoreML's compute-units settings, as the bench format names them (`coreml:all`, ...).
public enum ComputeUnits: String, CaseIterable, Sendable {
    case all
    case cpuAndGPU
    case cpuOnly
    case cpuAndNeuralEngine

    /// The backend spec in results: `coreml:<setting>`.
    public var backend: String { "coreml:\(rawValue)" }

    /// What the setting allows CoreML to use (CoreML still decides per layer).
    public var device: String {
        switch self {
        case .all: return "cpu+gpu+ane"
        case .cpuAndGPU: return "cpu+gpu"
        case .cpuOnly: return "cpu"
        case .cpuAndNeuralEngine: return "cpu+ane"
        }
    }

    /// A short label for tables on the phone.
    public var label: String {
        switch self {
        case .all: return "All"
        case .cpuAndGPU: return "CPU+GPU"
        case .cpuOnly: return "CPU"
        case .cpuAndNeuralEngine: return "CPU+ANE"
        }
    }

    /// Parse `all`, `cpuAndGPU`, ... (also `coreml:all`), or a comma list; `every` gives all four.
    public static func parseList(_ text: String) throws -> [ComputeUnits] {
        if text == "every" { return allCases }
        var out: [ComputeUnits] = []
        for raw in text.split(separator: ",") {
            var item = raw.trimmingSpaces()
            if item.hasPrefix("coreml:") { item.removeFirst("coreml:".count) }
            guard let unit = allCases.first(where: { $0.rawValue.lowercased() == item.lowercased() }) else {
                throw BenchError.invalidInput(
                    "unknown compute units '\(item)': use \(allCases.map(\.rawValue).joined(separator: ", ")) or 'every'")
            }
            if !out.contains(unit) { out.append(unit) }
        }
        if out.isEmpty { throw BenchError.invalidInput("no compute units given") }
        return out
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return String(s)
    }
}
