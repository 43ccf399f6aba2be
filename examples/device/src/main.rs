//! A simulated IoT device for the web example (`examples/web`): it publishes
//! temperature and humidity readings over MQTT and obeys commands.
//!
//! - Readings: `sensors/<id>/temperature` and `sensors/<id>/humidity`, JSON
//!   `{"value": 21.53, "unit": "°C"}`, QoS 0, every `--interval-ms`.
//! - Commands: `commands/<id>` (QoS 1), plain text: `led on`, `led off`,
//!   `interval <ms>` (100 to 60000).
//! - State: `sensors/<id>/status`, retained JSON, after every command; the will
//!   (and a clean exit on Ctrl-C) sets it to `{"online": false}`.
//!
//! Run: `cargo run -p tern-device -- --id device-1` (`--help` for the options).

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "A simulated MQTT sensor device for the Tern web example"
)]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker MQTT port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Device id: the client id and the topic level after `sensors/` and `commands/`.
    #[arg(long, default_value = "device-1")]
    id: String,
    /// Milliseconds between readings (a command can change it).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

/// What commands change.
#[derive(Debug, Clone, PartialEq)]
struct State {
    led: bool,
    interval: Duration,
    last_command: String,
}

impl State {
    fn status(&self) -> String {
        serde_json::json!({
            "online": true,
            "led": if self.led { "on" } else { "off" },
            "interval_ms": self.interval.as_millis() as u64,
            "last_command": self.last_command,
        })
        .to_string()
    }

    /// Applies one command; Err says why it was not understood.
    fn obey(&mut self, command: &str) -> Result<(), String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["led", "on"] => self.led = true,
            ["led", "off"] => self.led = false,
            ["interval", ms] => {
                let ms: u64 = ms.parse().map_err(|_| format!("not a number: {ms}"))?;
                if !(100..=60_000).contains(&ms) {
                    return Err("interval must be 100 to 60000 ms".into());
                }
                self.interval = Duration::from_millis(ms);
            }
            _ => return Err(format!("unknown command: {command}")),
        }
        self.last_command = command.to_string();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let status_topic = format!("sensors/{}/status", args.id);
    let command_topic = format!("commands/{}", args.id);
    let offline = serde_json::json!({ "online": false }).to_string();

    let mut options = MqttOptions::new(args.id.clone(), args.host.clone(), args.port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_last_will(LastWill::new(
        &status_topic,
        offline.clone(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut eventloop) = AsyncClient::new(options, 64);

    let mut state = State {
        led: false,
        interval: Duration::from_millis(args.interval_ms.max(100)),
        last_command: String::new(),
    };
    let (interval_tx, interval_rx) = watch::channel(state.interval);
    tokio::spawn(publish_readings(
        client.clone(),
        args.id.clone(),
        interval_rx,
    ));

    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                println!("{}: connected to {}:{}", args.id, args.host, args.port);
                // try_*: this task is the one that drives the event loop, so it must not wait.
                client
                    .try_subscribe(&command_topic, QoS::AtLeastOnce)
                    .context("subscribe")?;
                client
                    .try_publish(&status_topic, QoS::AtLeastOnce, true, state.status())
                    .context("publish status")?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == command_topic => {
                let command = String::from_utf8_lossy(&p.payload).trim().to_string();
                let status = match state.obey(&command) {
                    Ok(()) => {
                        println!("{}: obeyed {command:?}", args.id);
                        let _ = interval_tx.send(state.interval);
                        state.status()
                    }
                    Err(why) => {
                        println!("{}: {why}", args.id);
                        serde_json::json!({ "online": true, "error": why }).to_string()
                    }
                };
                if let Err(e) = client.try_publish(&status_topic, QoS::AtLeastOnce, true, status) {
                    eprintln!("{}: cannot publish the status: {e}", args.id);
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("{}: connection error: {e}; retrying in 2 s", args.id);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    // A clean exit publishes what the will would have said.
    client
        .try_publish(&status_topic, QoS::AtLeastOnce, true, offline)
        .context("publish offline status")?;
    client.try_disconnect().context("disconnect")?;
    let drain = async { while eventloop.poll().await.is_ok() {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    Ok(())
}

/// Publishes a temperature and a humidity reading every interval (a slow random walk).
async fn publish_readings(
    client: AsyncClient,
    id: String,
    mut interval: watch::Receiver<Duration>,
) {
    let (mut temperature, mut humidity) = (21.0_f64, 45.0_f64);
    loop {
        let period = *interval.borrow_and_update();
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            // A new interval applies at once.
            changed = interval.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        {
            let mut rng = rand::rng();
            temperature = (temperature + rng.random_range(-0.3..0.3)).clamp(15.0, 30.0);
            humidity = (humidity + rng.random_range(-1.0..1.0)).clamp(20.0, 80.0);
        }
        for (reading, value, unit) in [
            ("temperature", temperature, "°C"),
            ("humidity", humidity, "%"),
        ] {
            let payload =
                serde_json::json!({ "value": (value * 100.0).round() / 100.0, "unit": unit });
            let topic = format!("sensors/{id}/{reading}");
            if client
                .publish(topic, QoS::AtMostOnce, false, payload.to_string())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            led: false,
            interval: Duration::from_secs(1),
            last_command: String::new(),
        }
    }

    #[test]
    fn obeys_led_and_interval_commands() {
        let mut s = state();
        s.obey("led on").unwrap();
        assert!(s.led);
        s.obey("interval 250").unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.last_command, "interval 250");
        assert!(s.status().contains("\"led\":\"on\""));
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let mut s = state();
        assert!(s.obey("interval 5").is_err());
        assert!(s.obey("self destruct").is_err());
        assert_eq!(s, state());
    }
}
