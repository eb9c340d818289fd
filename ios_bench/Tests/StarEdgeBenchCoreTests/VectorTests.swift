import XCTest
@testable import StarEdgeBenchCore

/// The shared vectors (TestVectors/stats_vectors.json, written from staredge.bench.stats):
/// every figure must come out as the same double in Swift.
final class VectorTests: XCTestCase {
    func testRunStatisticsMatchPython() throws {
        let vectors = try Paths.json("stats_vectors.json")
        let cases = try XCTUnwrap(vectors["stats"]?.arrayValue)
        XCTAssertGreaterThan(cases.count, 15)
        for c in cases {
            let name = c["name"]?.stringValue ?? "?"
            let samples = try XCTUnwrap(c["samples_ms"]?.arrayValue).compactMap(\.doubleValue)
            var trim: (low: Int, high: Int)? = nil
            if let t = c["trim"]?.arrayValue { trim = (t[0].intValue!, t[1].intValue!) }
            let run = try RunStats.fromSamples(samples, firstMs: c["first_ms"]?.doubleValue, trim: trim,
                                               warmup: c["warmup"]?.intValue ?? 0)
            let expected = try XCTUnwrap(c["expected"])
            // Field by field, so that a failure names the statistic.
            for (key, value) in try XCTUnwrap(run.toJSON().objectValue) {
                XCTAssertEqual(value, expected[key] ?? .null, "\(name): \(key)")
            }
            XCTAssertEqual(run, try RunStats.fromJSON(expected), name)
        }
    }

    func testPercentilesMatchPython() throws {
        let vectors = try Paths.json("stats_vectors.json")
        for c in try XCTUnwrap(vectors["percentiles"]?.arrayValue) {
            let samples = c["samples_ms"]!.arrayValue!.compactMap(\.doubleValue)
            let q = c["q"]!.doubleValue!
            XCTAssertEqual(try Statistics.percentile(samples, q), c["expected"]!.doubleValue!, "q=\(q) of \(samples.count)")
        }
    }

    func testRoundingMatchesPythonRound() throws {
        let vectors = try Paths.json("stats_vectors.json")
        let cases = try XCTUnwrap(vectors["round"]?.arrayValue)
        for c in cases {
            let x = c["x"]!.doubleValue!, digits = c["digits"]!.intValue!
            XCTAssertEqual(Statistics.roundDecimal(x, digits), c["expected"]!.doubleValue!, "round(\(x), \(digits))")
        }
        // Ties on the exact binary value go to even, which schoolbook rounding would not do.
        XCTAssertEqual(Statistics.roundDecimal(0.0078125, 6), 0.007812)
        XCTAssertNotEqual((0.0078125 * 1e6).rounded() / 1e6, 0.007812)
    }

    func testReportedFigureMatchesPythonHarness() throws {
        let vectors = try Paths.json("stats_vectors.json")
        for c in try XCTUnwrap(vectors["reported"]?.arrayValue) {
            let runs = try c["runs"]!.arrayValue!.map(RunStats.fromJSON)
            let statistic = try XCTUnwrap(StatisticName(rawValue: c["statistic"]!.stringValue!))
            let reduce = try XCTUnwrap(BenchProtocol.Reduce(rawValue: c["reduce"]!.stringValue!))
            let proto = BenchProtocol(name: "t", description: "", warmup: 0, iters: 50, repeats: runs.count,
                                      reduce: reduce, statistic: statistic, trimLow: 10, trimHigh: 10)
            let (figure, index) = try reportedLatency(runs, proto)
            XCTAssertEqual(figure, c["expected"]!.doubleValue!, "\(statistic) \(reduce)")
            XCTAssertEqual(index, reduce == .last ? runs.count - 1 : nil)
        }
    }

    func testNumbersAreWrittenWithPythonsDigits() throws {
        let vectors = try Paths.json("stats_vectors.json")
        let cases = try XCTUnwrap(vectors["repr"]?.arrayValue)
        XCTAssertGreaterThan(cases.count, 40)
        for c in cases {
            XCTAssertEqual(JSONValue.formatDouble(c["x"]!.doubleValue!), c["text"]!.stringValue!)
        }
    }

    func testFsumIsExact() {
        XCTAssertEqual(Statistics.fsum([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]), 1.0)
        XCTAssertNotEqual([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1].reduce(0, +), 1.0)
        XCTAssertEqual(Statistics.fsum([1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50]), 1e-100)
        // half-even correction across partials (CPython's own test case)
        XCTAssertEqual(Statistics.fsum([1e-16, 1, 1e16]), 1.0000000000000002e16)
    }

    func testBadInputsAreErrors() {
        XCTAssertThrowsError(try Statistics.mean([]))
        XCTAssertThrowsError(try Statistics.percentile([1], 101))
        XCTAssertThrowsError(try Statistics.trimmed([1, 2, 3], low: 2, high: 1))
        XCTAssertThrowsError(try Statistics.trimmed([1, 2, 3], low: -1, high: 0))
        XCTAssertThrowsError(try RunStats.fromSamples([]))
    }
}
