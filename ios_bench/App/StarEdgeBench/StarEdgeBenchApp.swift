// The StarEdge benchmark app: times the CoreML packages bundled in Models/ on this phone.
import SwiftUI

@main
struct StarEdgeBenchApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
