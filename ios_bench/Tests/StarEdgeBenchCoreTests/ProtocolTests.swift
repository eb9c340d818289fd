import XCTest
@testable import StarEdgeBenchCore

/// The protocols on a replayed series: which inferences are timed, trimming, model
/// re-creation, the three-run rule, cancellation.
final class ProtocolTests: XCTestCase {
    func testPresetsAreThePapersSettings() throws {
        let mb = BenchProtocol.modelBench
        XCTAssertEqual([mb.repeats, mb.iters, mb.warmup, mb.trimLow, mb.trimHigh], [20, 50, 1, 10, 10])
        XCTAssertTrue(mb.recreatePerRun)
        XCTAssertEqual(mb.reduce, .mean)
        XCTAssertEqual(mb.statistic, .trimmedMean)
        let ios = BenchProtocol.paperIPhone
        XCTAssertEqual([ios.repeats, ios.iters, ios.warmup], [3, 500, 50])
        XCTAssertEqual(ios.reduce, .last)
        XCTAssertFalse(ios.recreatePerRun)
        XCTAssertEqual(try BenchProtocol.preset(named: "ios"), ios)
        XCTAssertThrowsError(try BenchProtocol.preset(named: "nope"))
    }

    func testTimingLoopTimesOnlyTheTimedInferences() throws {
        // cold 9 ms, warm-up 7 and 8 ms, then 1...5 ms timed
        let (factory, clock) = replayFactory([9, 7, 8, 1, 2, 3, 4, 5])
        let runner = try factory.makeRunner()
        let run = try TimingLoop(clock: clock, cpuClock: nil).timeRun(runner, warmup: 2, iters: 5, trim: (1, 1))
        XCTAssertEqual(run.firstMs, 9)
        XCTAssertEqual(run.n, 5)
        XCTAssertEqual(run.meanMs, 3)
        XCTAssertEqual(run.trimmedMeanMs, 3)
        XCTAssertEqual(run.minMs, 1)
        XCTAssertEqual(run.maxMs, 5)
        XCTAssertEqual(run.warmup, 2)
        XCTAssertEqual(factory.inferences, 8)
    }

    func testModelBenchTrimsEachRoundAndRecreatesTheModel() throws {
        // one round: 2 untimed (cold + 1 warm-up), then 50 timed of which 10 are very fast
        // and 10 very slow; the trimmed mean sees only the 30 in the middle.
        var round: [Double] = [50, 20]
        round += Array(repeating: 0.1, count: 10) + Array(repeating: 1.0, count: 30) + Array(repeating: 30.0, count: 10)
        let (factory, clock) = replayFactory(round, loadMs: 100)
        let m = try ProtocolRunner(loop: TimingLoop(clock: clock, cpuClock: nil)).measure(.modelBench, factory: factory)
        XCTAssertEqual(m.status, "ok")
        XCTAssertEqual(m.runs.count, 20)
        XCTAssertEqual(factory.created, 20, "ModelBench loads the model again for every round")
        XCTAssertEqual(factory.inferences, 20 * 52)
        for run in m.runs {
            XCTAssertEqual(run.trimmedMeanMs, 1.0)
            XCTAssertEqual(run.meanMs, Statistics.nanosecondRounded((0.1 * 10 + 30 + 300) / 50))
            XCTAssertEqual(run.trim?.low, 10)
            XCTAssertEqual(run.firstMs, 50)
            XCTAssertEqual(run.extra.first?.0, "load_ms")
            XCTAssertEqual(run.extra.first?.1, .double(100))
        }
        XCTAssertEqual(m.latencyMs, 1.0)
        XCTAssertNil(m.reportedRun, "the mean over rounds has no single reported run")
    }

    func testPaperIPhoneReportsTheLastOfThreeRuns() throws {
        // each run is 1 + 50 + 500 inferences; the first run is faster (as the paper saw)
        let perRun = 1 + 50 + 500
        let series = Array(repeating: 0.6, count: perRun) + Array(repeating: 0.7, count: perRun) + Array(repeating: 0.71, count: perRun)
        let (factory, clock) = replayFactory(series)
        let m = try ProtocolRunner(loop: TimingLoop(clock: clock, cpuClock: nil)).measure(.paperIPhone, factory: factory)
        XCTAssertEqual(m.runs.map(\.meanMs), [0.6, 0.7, 0.71])
        XCTAssertEqual(m.reportedRun, 2)
        XCTAssertEqual(m.latencyMs, 0.71)
        XCTAssertEqual(factory.created, 1, "the iPhone practice keeps one model for its three runs")
        XCTAssertNil(m.runs[0].trim)
    }

    func testOverridesAreRecordedInTheId() throws {
        let p = try BenchProtocol.modelBench.withOverrides(iters: 30, repeats: 5)
        XCTAssertEqual(p.id, "modelbench[iters=30,repeats=5]")
        XCTAssertEqual(try BenchProtocol.modelBench.withOverrides(iters: 50).id, "modelbench", "a preset value is no override")
        XCTAssertThrowsError(try BenchProtocol.modelBench.withOverrides(iters: 20)) { error in
            XCTAssertTrue(String(describing: error).contains("cannot drop 10 lowest and 10 highest of 20"))
        }
        XCTAssertThrowsError(try BenchProtocol.paperIPhone.withOverrides(repeats: 0))
    }

    func testCancellationKeepsWhatWasTimed() throws {
        final class CancellingRunner: InferenceRunner {
            let clock: VirtualClock
            let token: CancellationToken
            var calls = 0
            init(clock: VirtualClock, token: CancellationToken) { self.clock = clock; self.token = token }
            func infer() throws {
                calls += 1
                clock.advance(ms: 2)
                if calls == 1 + 50 + 30 { token.cancel() }  // during the 30th timed inference of run 1
            }
        }
        struct Factory: RunnerFactory {
            let runner: CancellingRunner
            func makeRunner() throws -> InferenceRunner { runner }
        }
        let clock = VirtualClock()
        let token = CancellationToken()
        let m = try ProtocolRunner(loop: TimingLoop(clock: clock, cpuClock: nil))
            .measure(.paperIPhone, factory: Factory(runner: CancellingRunner(clock: clock, token: token)), cancel: token)
        XCTAssertEqual(m.status, "interrupted")
        XCTAssertEqual(m.runs.count, 1)
        XCTAssertEqual(m.runs[0].n, 30)
        XCTAssertTrue(m.runs[0].interrupted)
        XCTAssertEqual(m.latencyMs, 2)
    }

    func testARunnerErrorEndsTheMeasurementWithItsMessage() throws {
        struct Broken: RunnerFactory {
            func makeRunner() throws -> InferenceRunner { throw BenchError.runner("cannot load x.mlpackage") }
        }
        let m = try ProtocolRunner().measure(.paperIPhone, factory: Broken())
        XCTAssertEqual(m.status, "error")
        XCTAssertEqual(m.error, "cannot load x.mlpackage")
        XCTAssertNil(m.latencyMs)
    }

    func testComputeUnitsParse() throws {
        XCTAssertEqual(try ComputeUnits.parseList("all,cpuOnly"), [.all, .cpuOnly])
        XCTAssertEqual(try ComputeUnits.parseList("coreml:cpuAndNeuralEngine"), [.cpuAndNeuralEngine])
        XCTAssertEqual(try ComputeUnits.parseList("every").count, 4)
        XCTAssertEqual(ComputeUnits.cpuAndGPU.backend, "coreml:cpuAndGPU")
        XCTAssertThrowsError(try ComputeUnits.parseList("gpu"))
    }

    func testMonotonicClockMovesForward() {
        let clock = MonotonicClock()
        let a = clock.now()
        var x = 0.0
        for i in 0..<10_000 { x += Double(i).squareRoot() }
        XCTAssertGreaterThan(x, 0)
        XCTAssertGreaterThanOrEqual(clock.now(), a)
    }
}
