// Summary statistics of one measurement run, defined exactly as StarEdge's Python
// (staredge/bench/stats.py), so that the same latencies give the same digits in both:
// correctly rounded sums (Python's math.fsum), percentiles by linear interpolation between
// closest ranks (numpy's "linear" method), population standard deviation, and values
// rounded to the nanosecond the way Python's round(x, 6) does.

#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Pure arithmetic on latencies that were already measured (milliseconds).
public enum Statistics {
    /// The correctly rounded sum of `values` (the algorithm of CPython's `math.fsum`:
    /// exact partial sums, then a half-even correction across the last two partials).
    public static func fsum<S: Sequence>(_ values: S) -> Double where S.Element == Double {
        var partials: [Double] = []
        var specialSum = 0.0
        var sawSpecial = false
        for value in values {
            var x = value
            var kept = 0
            for j in 0..<partials.count {
                var y = partials[j]
                if abs(x) < abs(y) { swap(&x, &y) }
                let hi = x + y
                let lo = y - (hi - x)
                if lo != 0.0 {
                    partials[kept] = lo
                    kept += 1
                }
                x = hi
            }
            partials.removeSubrange(kept..<partials.count)
            if x != 0.0 {
                if !x.isFinite {
                    // inf/nan: Python either returns them or raises; timings are never like this
                    sawSpecial = true
                    specialSum += x
                } else {
                    partials.append(x)
                }
            }
        }
        if sawSpecial { return specialSum }
        var n = partials.count
        var hi = 0.0
        if n > 0 {
            n -= 1
            hi = partials[n]
            var lo = 0.0
            while n > 0 {
                let x = hi
                n -= 1
                let y = partials[n]
                hi = x + y
                let yr = hi - x
                lo = y - yr
                if lo != 0.0 { break }
            }
            if n > 0 && ((lo < 0.0 && partials[n - 1] < 0.0) || (lo > 0.0 && partials[n - 1] > 0.0)) {
                let y = lo * 2.0
                let x = hi + y
                let yr = x - hi
                if y == yr { hi = x }
            }
        }
        return hi
    }

    /// Arithmetic mean (correctly rounded sum divided by the count).
    public static func mean(_ values: [Double]) throws -> Double {
        guard !values.isEmpty else { throw BenchError.invalidInput("mean of an empty list of timings") }
        return fsum(values) / Double(values.count)
    }

    /// Population standard deviation (0 for a single value).
    public static func std(_ values: [Double]) throws -> Double {
        let m = try mean(values)
        // Python writes (v - m) ** 2, which is the C library's pow(d, 2.0): use the same call.
        return (fsum(values.map { pow($0 - m, 2.0) }) / Double(values.count)).squareRoot()
    }

    /// The `q`-th percentile (0...100), linear interpolation between closest ranks: the
    /// value at fractional rank `(n - 1) * q / 100` of the sorted data.
    public static func percentile(_ values: [Double], _ q: Double) throws -> Double {
        guard !values.isEmpty else { throw BenchError.invalidInput("percentile of an empty list of timings") }
        guard q >= 0.0 && q <= 100.0 else { throw BenchError.invalidInput("percentile q must be within [0, 100], got \(q)") }
        let data = values.sorted()
        let rank = Double(data.count - 1) * q / 100.0
        let lo = Int(rank.rounded(.down))
        let hi = min(lo + 1, data.count - 1)
        let frac = rank - Double(lo)
        return data[lo] + (data[hi] - data[lo]) * frac
    }

    /// `values` sorted, without the `low` smallest and `high` largest. Dropping as many
    /// values as there are (or more) is an error rather than an empty mean.
    public static func trimmed(_ values: [Double], low: Int, high: Int) throws -> [Double] {
        guard low >= 0 && high >= 0 else {
            throw BenchError.invalidInput("trim counts must be >= 0, got low=\(low), high=\(high)")
        }
        guard low + high < values.count else {
            throw BenchError.invalidInput(
                "cannot drop \(low) lowest and \(high) highest of \(values.count) timings: raise the iterations or lower the trim counts")
        }
        let data = values.sorted()
        return Array(data[low..<(data.count - high)])
    }

    /// `x` rounded to `digits` decimals exactly as Python's `round(x, digits)`: the correctly
    /// rounded decimal (ties to even on the exact binary value), read back as a Double.
    public static func roundDecimal(_ x: Double, _ digits: Int) -> Double {
        guard x.isFinite else { return x }
        var buffer = [CChar](repeating: 0, count: 400)
        let written = withVaList([Int32(digits), x]) { args in
            buffer.withUnsafeMutableBufferPointer { vsnprintf($0.baseAddress, $0.count, "%.*f", args) }
        }
        guard written > 0 && Int(written) < buffer.count else { return x }
        return buffer.withUnsafeBufferPointer { strtod($0.baseAddress!, nil) }
    }

    /// Milliseconds rounded to the nanosecond: the clock's resolution, no false digits.
    public static func nanosecondRounded(_ ms: Double) -> Double { roundDecimal(ms, 6) }
}

/// Per-run statistic a protocol reports.
public enum StatisticName: String, CaseIterable, Sendable {
    case mean, median, p90, p99, min
    case trimmedMean = "trimmed_mean"
}

/// Statistics of one measurement run: one cold inference, `warmup` untimed ones, then `n`
/// timed inferences. Field for field the `RunStats` of StarEdge's Python (same JSON keys).
public struct RunStats: Equatable, Sendable {
    public var n: Int
    public var firstMs: Double?
    public var meanMs: Double
    public var medianMs: Double
    public var p90Ms: Double
    public var p99Ms: Double
    public var stdMs: Double
    public var minMs: Double
    public var maxMs: Double
    public var trimmedMeanMs: Double?
    public var trim: (low: Int, high: Int)?
    public var warmup: Int
    public var cpuUtilisation: Double?
    public var interrupted: Bool
    public var samplesMs: [Double]?
    /// Keys beyond the Python schema (readers ignore them), e.g. `load_ms`, LM prefill figures.
    public var extra: [(String, JSONValue)]

    /// Summarise timed latencies (ms); `trim` adds a trimmed mean when it drops anything
    /// (a protocol that drops nothing passes nil, as the Python harness does).
    public static func fromSamples(
        _ samples: [Double], firstMs: Double? = nil, trim: (low: Int, high: Int)? = nil, warmup: Int = 0,
        cpuUtilisation: Double? = nil, interrupted: Bool = false, keepSamples: Bool = false,
        extra: [(String, JSONValue)] = []
    ) throws -> RunStats {
        guard !samples.isEmpty else { throw BenchError.invalidInput("a run needs at least one timed inference") }
        var trimmedMean: Double? = nil
        if let t = trim, t.low != 0 || t.high != 0 {
            trimmedMean = Statistics.nanosecondRounded(try Statistics.mean(Statistics.trimmed(samples, low: t.low, high: t.high)))
        }
        let ns = Statistics.nanosecondRounded
        return RunStats(
            n: samples.count,
            firstMs: firstMs.map(ns),
            meanMs: ns(try Statistics.mean(samples)),
            medianMs: ns(try Statistics.percentile(samples, 50)),
            p90Ms: ns(try Statistics.percentile(samples, 90)),
            p99Ms: ns(try Statistics.percentile(samples, 99)),
            stdMs: ns(try Statistics.std(samples)),
            minMs: ns(samples.min()!),
            maxMs: ns(samples.max()!),
            trimmedMeanMs: trimmedMean,
            trim: trim,
            warmup: warmup,
            cpuUtilisation: cpuUtilisation,
            interrupted: interrupted,
            samplesMs: keepSamples ? samples : nil,
            extra: extra
        )
    }

    /// One statistic by name; `trimmed_mean` falls back to the mean for an untrimmed run.
    public func statistic(_ name: StatisticName) -> Double {
        switch name {
        case .mean: return meanMs
        case .median: return medianMs
        case .p90: return p90Ms
        case .p99: return p99Ms
        case .min: return minMs
        case .trimmedMean: return trimmedMeanMs ?? meanMs
        }
    }

    /// The run as the bench format's JSON object, keys in the Python writer's order.
    public func toJSON() -> JSONValue {
        var fields: [(String, JSONValue)] = [
            ("n", .int(n)),
            ("first_ms", JSONValue(firstMs)),
            ("mean_ms", .double(meanMs)),
            ("median_ms", .double(medianMs)),
            ("p90_ms", .double(p90Ms)),
            ("p99_ms", .double(p99Ms)),
            ("std_ms", .double(stdMs)),
            ("min_ms", .double(minMs)),
            ("max_ms", .double(maxMs)),
            ("trimmed_mean_ms", JSONValue(trimmedMeanMs)),
            ("trim", trim.map { .array([.int($0.low), .int($0.high)]) } ?? .null),
            ("warmup", .int(warmup)),
            ("cpu_utilisation", JSONValue(cpuUtilisation)),
            ("interrupted", .bool(interrupted)),
        ]
        if let samples = samplesMs { fields.append(("samples_ms", .array(samples.map { .double($0) }))) }
        fields.append(contentsOf: extra)
        return .object(fields)
    }

    /// Read a run record of the bench format (unknown keys are kept in `extra`).
    public static func fromJSON(_ value: JSONValue) throws -> RunStats {
        guard let fields = value.objectValue else { throw BenchError.format("a run must be a JSON object") }
        func number(_ key: String) throws -> Double {
            guard let v = value[key]?.doubleValue else { throw BenchError.format("a run lacks the number '\(key)'") }
            return v
        }
        guard let n = value["n"]?.intValue else { throw BenchError.format("a run lacks the integer 'n'") }
        let known: Set<String> = ["n", "first_ms", "mean_ms", "median_ms", "p90_ms", "p99_ms", "std_ms", "min_ms", "max_ms",
                                  "trimmed_mean_ms", "trim", "warmup", "cpu_utilisation", "interrupted", "samples_ms"]
        var trim: (low: Int, high: Int)? = nil
        if let t = value["trim"]?.arrayValue, t.count == 2, let low = t[0].intValue, let high = t[1].intValue { trim = (low, high) }
        return RunStats(
            n: n, firstMs: value["first_ms"]?.doubleValue, meanMs: try number("mean_ms"), medianMs: try number("median_ms"),
            p90Ms: try number("p90_ms"), p99Ms: try number("p99_ms"), stdMs: try number("std_ms"), minMs: try number("min_ms"),
            maxMs: try number("max_ms"), trimmedMeanMs: value["trimmed_mean_ms"]?.doubleValue, trim: trim,
            warmup: value["warmup"]?.intValue ?? 0, cpuUtilisation: value["cpu_utilisation"]?.doubleValue,
            interrupted: value["interrupted"]?.boolValue ?? false,
            samplesMs: value["samples_ms"]?.arrayValue?.compactMap(\.doubleValue),
            extra: fields.filter { !known.contains($0.0) })
    }

    public static func == (a: RunStats, b: RunStats) -> Bool {
        a.toJSON() == b.toJSON()
    }
}
