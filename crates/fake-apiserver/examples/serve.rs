//! Run a fake API server until killed; prints its kubeconfig to stdout (for manual poking).
#![allow(clippy::print_stdout)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = furynet_fake_apiserver::FakeApiServer::start()?;
    println!("{}", server.kubeconfig_yaml());
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
