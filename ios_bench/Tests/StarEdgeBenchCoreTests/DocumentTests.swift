import Foundation
import XCTest
@testable import StarEdgeBenchCore

/// The result document: the golden file that the Python tests merge, its shape, and the
/// JSON writer and reader.
final class DocumentTests: XCTestCase {
    static let goldenName = "golden_ios_bench.json"

    /// The document the core writes for the example bundle must equal the committed golden
    /// file byte for byte (tests/test_ios_bench.py merges that file with CPU results).
    /// Set STAREDGE_UPDATE_GOLDEN=1 to rewrite it after an intended change.
    func testWritesTheGoldenDocument() throws {
        let doc = try goldenDocument()
        let url = Paths.vectors.appendingPathComponent(Self.goldenName)
        if ProcessInfo.processInfo.environment["STAREDGE_UPDATE_GOLDEN"] == "1" {
            try doc.write(to: url, force: true)
        }
        let written = FileManager.default.temporaryDirectory.appendingPathComponent("staredge-golden-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: written) }
        try doc.write(to: written)
        XCTAssertThrowsError(try doc.write(to: written), "an existing file is not replaced without force")
        let ours = try String(contentsOf: written, encoding: .utf8)
        let golden = try String(contentsOf: url, encoding: .utf8)
        XCTAssertEqual(ours, golden, "the writer's output changed; if intended, rerun with STAREDGE_UPDATE_GOLDEN=1")
    }

    func testDocumentHasTheBenchFormatShape() throws {
        let json = try goldenDocument().toJSON()
        XCTAssertEqual(json["schema"], .string("staredge-bench"))
        XCTAssertEqual(json["schema_version"], .int(1))
        XCTAssertEqual(json.objectValue?.map(\.0),
                       ["schema", "schema_version", "tool", "created_utc", "complete", "notes", "machines", "protocols", "results"])
        let machines = try XCTUnwrap(json["machines"]?.objectValue)
        let protocols = try XCTUnwrap(json["protocols"]?.objectValue)
        XCTAssertEqual(machines.count, 1)
        XCTAssertEqual(machines[0].1["label"], .string("iPhone 13 (synthetic replay)"))
        XCTAssertEqual(protocols.map(\.0), ["ios"])
        XCTAssertEqual(protocols[0].1["threads"], .null)
        let results = try XCTUnwrap(json["results"]?.arrayValue)
        // 2 models x 2 compute-units settings; the recording lacks starnet_s2 on cpuOnly
        XCTAssertEqual(results.count, 4)
        for r in results {
            for key in ["model", "backend", "machine", "protocol"] { XCTAssertNotNil(r[key], key) }
            XCTAssertEqual(r["machine"]?.stringValue, machines[0].0)
            XCTAssertEqual(r["runtime"], .string("coreml"))
        }
        let ok = results.filter { $0["status"] == .string("ok") }
        XCTAssertEqual(ok.count, 3)
        for r in ok {
            let runs = try XCTUnwrap(r["runs"]?.arrayValue)
            XCTAssertEqual(runs.count, 3, "every run is kept")
            XCTAssertEqual(r["reported_run"], .int(2))
            let lastMean = try XCTUnwrap(runs[2]["mean_ms"]?.doubleValue)
            XCTAssertEqual(r["latency_ms"], .double(Statistics.roundDecimal(lastMean, 5)), "the last run's mean is reported (5 decimals, as Python)")
            XCTAssertEqual(runs[0]["n"], .int(500))
            XCTAssertEqual(runs[0]["warmup"], .int(50))
        }
        let missing = try XCTUnwrap(results.first { $0["status"] == .string("unavailable") })
        XCTAssertEqual(missing["backend"], .string("coreml:cpuOnly"))
        XCTAssertEqual(missing["model"], .string("starnet_s2"))
        XCTAssertEqual(missing["latency_ms"], .null)
        XCTAssertEqual(results[0]["params_m"], .double(2.8692))
    }

    func testASessionRecordsWhatCouldNotRunAndGoesOn() throws {
        struct Failing: Error, CustomStringConvertible { var description: String { "disk on fire" } }
        final class Provider: RunnerProvider {
            var runtimeVersion: String? { "test" }
            func factory(for model: BundledModel, units: ComputeUnits) throws -> RunnerFactory {
                if units == .cpuOnly { throw Failing() }
                if units == .cpuAndGPU { throw BenchError.unsupported("no GPU here") }
                return replayFactory([1, 2, 3]).0
            }
        }
        let session = BenchSession(tool: "t", machine: MachineInfo(label: "x", os: "y", hardware: "z", arch: "a"),
                                   proto: try BenchProtocol.paperIPhone.withOverrides(warmup: 0, iters: 3, repeats: 1),
                                   now: { "2026-12-01T00:00:00Z" })
        let doc = try session.run(models: [BundledModel(name: "m", package: "m.mlpackage")],
                                  units: [.cpuOnly, .cpuAndGPU, .all], provider: Provider())
        XCTAssertEqual(doc.results.map(\.status), ["error", "unavailable", "ok"])
        XCTAssertEqual(doc.results.map(\.error), ["disk on fire", "no GPU here", nil])
        XCTAssertEqual(doc.results[2].runtimeVersion, "test")
        XCTAssertTrue(doc.complete)
        XCTAssertEqual(doc.protocols.map(\.0), ["ios[iters=3,repeats=1,warmup=0]"])
    }

    func testResultsMustReferToKnownIds() {
        var doc = BenchDocument(tool: "t", createdUTC: "2026-12-01T00:00:00Z")
        doc.results.append(BenchResultRecord(model: "m", backend: "coreml:all", machine: "nowhere", proto: "ios", measuredUTC: ""))
        XCTAssertThrowsError(try doc.toJSON())
    }

    func testJSONRoundTripKeepsOrderAndValues() throws {
        let value: JSONValue = .object([
            ("z", .int(1)), ("a", .array([.double(0.1), .null, .bool(true), .string("é \"q\" \n \u{1F600}")])),
            ("empty", .object([])), ("list", .array([])), ("neg", .double(-2.5e-07)),
        ])
        for indent in [0, 2] {
            XCTAssertEqual(try JSONValue.parse(value.serialized(indent: indent)), value)
        }
        XCTAssertEqual(value.serialized(indent: 2).components(separatedBy: "\n")[1], "  \"z\": 1,")
        XCTAssertTrue(value.serialized().contains("\\u00e9"), "non-ASCII escaped like Python's json")
        XCTAssertTrue(value.serialized().contains("\\ud83d\\ude00"))
        XCTAssertThrowsError(try JSONValue.parse("{\"a\": }"))
        XCTAssertThrowsError(try JSONValue.parse("[1, 2"))
        XCTAssertThrowsError(try JSONValue.parse("{} x"))
    }

    func testUTCTimestamp() {
        XCTAssertEqual(utcTimestamp(Date(timeIntervalSince1970: 1_764_547_200)), "2025-12-01T00:00:00Z")
    }
}
