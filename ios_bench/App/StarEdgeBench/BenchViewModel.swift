// What the screen shows and does: the bundled models, the chosen protocol and compute
// units, a run on a serial background queue with throttled progress, the results table and
// the JSON file to share. The measuring itself is StarEdgeBenchCore's BenchSession.
import Foundation
import StarEdgeBenchCore
import StarEdgeBenchCoreML
import SwiftUI
import UIKit

final class BenchViewModel: ObservableObject {
    @Published var models: [BundledModel] = []
    @Published var selected: Set<String> = []
    @Published var protocolName = BenchProtocol.modelBench.name
    @Published var units: Set<ComputeUnits> = [.all]
    @Published var machineLabel = MachineInfo.current().label
    @Published private(set) var isRunning = false
    @Published private(set) var progress = 0.0
    @Published private(set) var status = ""
    @Published private(set) var results: [BenchResultRecord] = []
    @Published private(set) var resultsURL: URL?
    @Published private(set) var loadError: String?

    private var manifest = BundleManifest()
    private let folder: URL?
    /// Every inference runs on this one serial queue (ModelBench's practice), never on main.
    private let queue = DispatchQueue(label: "org.staredge.bench.timing", qos: .userInitiated)
    private var cancel: CancellationToken?

    init() {
        folder = Bundle.main.url(forResource: "Models", withExtension: nil)
        do {
            guard let folder else {
                throw BenchError.io("the app holds no Models folder: run `staredge ios-bundle MODEL --out ios_bench/Models`, then build again")
            }
            manifest = try BundleManifest.load(folder: folder)
            models = manifest.models
            selected = Set(models.map(\.id))
            if models.isEmpty { loadError = "manifest.json lists no models" }
        } catch {
            loadError = String(describing: error)
        }
    }

    var selectedProtocol: BenchProtocol { (try? BenchProtocol.preset(named: protocolName)) ?? .modelBench }
    var canRun: Bool { folder != nil && !selected.isEmpty && !units.isEmpty && !isRunning }
    var languageModels: Set<String> { Set(models.filter(\.isLanguageModel).map(\.name)) }

    func isSelected(_ model: BundledModel) -> Binding<Bool> {
        Binding(get: { self.selected.contains(model.id) },
                set: { on in if on { self.selected.insert(model.id) } else { self.selected.remove(model.id) } })
    }

    func isSelected(_ unit: ComputeUnits) -> Binding<Bool> {
        Binding(get: { self.units.contains(unit) },
                set: { on in if on { self.units.insert(unit) } else { self.units.remove(unit) } })
    }

    /// Measure every selected model on every selected compute-units setting.
    func run() {
        guard let folder, canRun else { return }
        let chosen = models.filter { selected.contains($0.id) }
        let chosenUnits = ComputeUnits.allCases.filter { units.contains($0) }
        var machine = MachineInfo.current(label: machineLabel.isEmpty ? nil : machineLabel)
        machine.versions = [("StarEdgeBench", StarEdgeBench.version)]
        let session = BenchSession(tool: "StarEdge iOS \(StarEdgeBench.version)", machine: machine,
                                   proto: selectedProtocol, rewrite: manifest.rewrite)
        let provider = CoreMLProvider(folder: folder)
        let token = CancellationToken()
        cancel = token
        isRunning = true
        results = []
        resultsURL = nil
        progress = 0
        status = "loading"
        UIApplication.shared.isIdleTimerDisabled = true  // a locked screen would stop the run
        queue.async { [weak self] in
            var shown = -1.0
            let outcome = Result<BenchDocument, Error> {
                try session.run(models: chosen, units: chosenUnits, provider: provider, cancel: token, progress: { p in
                    // at most one UI update per percent, so the main thread stays quiet while timing
                    guard p.fraction - shown >= 0.01 || p.run.done == 0 else { return }
                    shown = p.fraction
                    let text = "\(p.model) · \(p.units.label) · run \(p.run.run + 1)/\(p.run.runs)"
                    DispatchQueue.main.async {
                        self?.progress = p.fraction
                        self?.status = text
                    }
                }, onResult: { r in
                    DispatchQueue.main.async { self?.results.append(r) }
                })
            }
            DispatchQueue.main.async { self?.finish(outcome, machine: machine) }
        }
    }

    /// Stop after the inference under way; the finished measurements are kept and saved.
    func stop() { cancel?.cancel() }

    private func finish(_ outcome: Result<BenchDocument, Error>, machine: MachineInfo) {
        isRunning = false
        UIApplication.shared.isIdleTimerDisabled = false
        switch outcome {
        case let .success(doc):
            do {
                let documents = try FileManager.default.url(for: .documentDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
                let stamp = doc.createdUTC.replacingOccurrences(of: ":", with: "")
                let url = documents.appendingPathComponent("staredge-bench-\(machine.id)-\(stamp).json")
                try doc.write(to: url, force: true)
                resultsURL = url
                progress = 1
                status = doc.complete ? "done" : "stopped: the finished measurements are saved"
            } catch {
                status = "could not save the results: \(error)"
            }
        case let .failure(error):
            status = String(describing: error)
        }
    }
}
