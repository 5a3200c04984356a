//! `herald appenders`: writes the `LocalLogConfig.xml` files that make each Qlik
//! Sense service send its events to herald.
//!
//! One file per service (Engine, Proxy, Repository, Scheduler), each to be copied
//! to `C:\ProgramData\Qlik\Sense\<Service>\LocalLogConfig.xml` on every node. The
//! patterns are exactly the ones `docs/WIRE.md` documents and the parser reads;
//! a test renders every pattern with sample values and parses the result. This
//! module only produces text; it does not touch a Sense server.

use std::fmt::Write as _;

/// Where the generated appenders send to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address of the herald server, as Sense should reach it.
    pub host: String,
    /// Port for log events (Butler SOS's 9996).
    pub log_port: u16,
    /// Port for user session/connection events (Butler SOS's 9997).
    pub user_port: u16,
    /// Port for task events (Butler's 9998).
    pub task_port: u16,
}

/// One generated file.
#[derive(Debug, Clone)]
pub struct AppenderFile {
    /// The Sense service folder it belongs in (`Engine`, `Proxy`, ...).
    pub service: &'static str,
    /// The XML.
    pub xml: String,
}

/// Qlik's converters, declared by every layout that uses them.
const CONVERTERS: [(&str, &str); 6] = [
    ("rownum", "CounterPatternConverter"),
    ("hostname", "HostNamePatternConverter"),
    ("longIso8601date", "Iso8601TimeOffsetPatternConverter"),
    ("user", "ServiceUserNameCachedPatternConverter"),
    ("encodedmessage", "EncodedMessagePatternConverter"),
    ("encodedexception", "EncodedExceptionPatternConverter"),
];

const LOG_HEAD: &str = "%rownum{9999};%longIso8601date;%date;%level;%hostname;%logger;%user";
const TASK_FIELDS: &str = "%hostname;%property{TaskName};%property{AppName};%property{User};%property{TaskId};%property{AppId};%date;%level;%property{ExecutionId};%message";
const USER_FIELDS: &str = "%hostname;%property{Command};%property{UserDirectory};%property{UserId};%property{Origin};%property{Context};%message";

/// One `<appender>`.
struct Appender {
    name: &'static str,
    port: Port,
    /// `threshold` parameter (minimum level), if any.
    threshold: Option<&'static str>,
    /// Message substrings; any one selects the event (one filter element each).
    matches: &'static [&'static str],
    pattern: String,
}

#[derive(Clone, Copy)]
enum Port {
    Log,
    User,
    Task,
}

/// One Sense service's file: its appenders and which loggers feed them.
struct Service {
    name: &'static str,
    appenders: Vec<Appender>,
    loggers: Vec<(&'static str, &'static [&'static str])>,
}

/// Every pattern herald generates, by service.
fn services() -> Vec<Service> {
    let log = |tag: &str, tail: &str| format!("{tag};{LOG_HEAD};{tail}");
    let task = |tag: &str| format!("{tag};{TASK_FIELDS}");
    vec![
        Service {
            name: "Engine",
            appenders: vec![
                Appender {
                    name: "HeraldQixPerf",
                    port: Port::Log,
                    threshold: Some("info"),
                    matches: &[],
                    pattern: log(
                        "/qseow-qix-perf/",
                        "%property{ProxySessionId};%property{ActiveUserDirectory};%property{ActiveUserId};%property{EngineTimestamp};%property{SessionId};%property{DocId};%property{RequestId};%property{Method};%property{ProcessTime};%property{WorkTime};%property{LockTime};%property{ValidateTime};%property{TraverseTime};%property{Handle};%property{ObjectId};%property{NetRAM};%property{PeakRAM};%property{ObjectType}",
                    ),
                },
                Appender {
                    name: "HeraldLogEvent",
                    port: Port::Log,
                    threshold: Some("warn"),
                    matches: &[],
                    pattern: log(
                        "/qseow-engine/",
                        "%encodedmessage;%property{ProxySessionId};%property{ActiveUserDirectory};%property{ActiveUserId};%property{EngineTimestamp};%property{ProcessId};%property{Exe Version};%property{Server Started};%property{Entry Type};%property{SessionId};%property{AppId}",
                    ),
                },
            ],
            loggers: vec![
                ("QixPerformance.Engine.Engine", &["HeraldQixPerf"]),
                ("Performance.Engine", &["HeraldLogEvent"]),
                ("System.Engine", &["HeraldLogEvent"]),
                ("Session.Engine", &["HeraldLogEvent"]),
            ],
        },
        Service {
            name: "Proxy",
            appenders: vec![
                Appender {
                    name: "HeraldSession",
                    port: Port::User,
                    threshold: None,
                    matches: &["Start session for user", "Stop session for user"],
                    pattern: format!("/qseow-proxy-session/;{USER_FIELDS}"),
                },
                Appender {
                    name: "HeraldConnection",
                    port: Port::User,
                    threshold: None,
                    matches: &[
                        "connection Opened for session",
                        "connection Closed for session",
                    ],
                    pattern: format!("/qseow-proxy-connection/;{USER_FIELDS}"),
                },
                Appender {
                    name: "HeraldLogEvent",
                    port: Port::Log,
                    threshold: Some("warn"),
                    matches: &[],
                    pattern: log("/qseow-proxy/", PROXY_TAIL),
                },
            ],
            loggers: vec![
                (
                    "AuditActivity.Proxy",
                    &["HeraldSession", "HeraldConnection"],
                ),
                ("Audit.Proxy", &["HeraldLogEvent"]),
                ("AuditSecurity", &["HeraldLogEvent"]),
                ("Security.Proxy", &["HeraldLogEvent"]),
                ("System.Proxy", &["HeraldLogEvent"]),
            ],
        },
        Service {
            name: "Repository",
            appenders: vec![Appender {
                name: "HeraldLogEvent",
                port: Port::Log,
                threshold: Some("warn"),
                matches: &[],
                pattern: log("/qseow-repository/", PROXY_TAIL),
            }],
            loggers: vec![
                ("Service", &["HeraldLogEvent"]),
                ("System.Repository", &["HeraldLogEvent"]),
                ("UserManagement.Repository", &["HeraldLogEvent"]),
            ],
        },
        Service {
            name: "Scheduler",
            appenders: vec![
                Appender {
                    name: "HeraldLogEvent",
                    port: Port::Log,
                    threshold: Some("warn"),
                    matches: &[],
                    pattern: log(
                        "/qseow-scheduler/",
                        "%encodedmessage;%encodedexception;%property{UserDirectory};%property{UserId};%property{User};%property{TaskName};%property{AppName};%property{TaskId};%property{AppId};%property{ExecutionId}",
                    ),
                },
                Appender {
                    name: "HeraldTaskFailed",
                    port: Port::Task,
                    threshold: None,
                    matches: &[
                        "Max retries reached",
                        "Failed to start session",
                        "Could not reserve an executor for task",
                    ],
                    pattern: task("/scheduler-task-failed/"),
                },
                Appender {
                    name: "HeraldTaskAborted",
                    port: Port::Task,
                    threshold: None,
                    matches: &["Execution State Change to Aborting"],
                    pattern: task("/scheduler-task-aborted/"),
                },
                Appender {
                    name: "HeraldTaskSuccess",
                    port: Port::Task,
                    threshold: None,
                    matches: &["Execution State Change to FinishedSuccess"],
                    pattern: task("/scheduler-task-success/"),
                },
                Appender {
                    name: "HeraldDistribute",
                    port: Port::Task,
                    threshold: None,
                    matches: &["Exiting execute of Distribute task request."],
                    pattern: task("/scheduler-distribute/"),
                },
            ],
            loggers: vec![
                ("Service", &["HeraldLogEvent"]),
                ("System.Scheduler", &["HeraldLogEvent"]),
                (
                    "System.Scheduler.Scheduler.Master.Task.TaskSession",
                    &["HeraldTaskFailed", "HeraldTaskAborted", "HeraldTaskSuccess"],
                ),
                (
                    "System.Scheduler.Scheduler.Slave.Tasks.ReloadTask",
                    &["HeraldDistribute"],
                ),
            ],
        },
    ]
}

const PROXY_TAIL: &str = "%encodedmessage;%encodedexception;%property{UserDirectory};%property{UserId};%property{Command};%property{Result};%property{Origin};%property{Context}";

/// Renders the four files for `target`.
pub fn generate(target: &Target) -> Vec<AppenderFile> {
    services()
        .into_iter()
        .map(|Service { name: service, appenders, loggers }| {
            let mut xml = String::new();
            let _ = writeln!(xml, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            let _ = writeln!(
                xml,
                "<!-- Sends Qlik Sense {service} log events to herald at {}.\n     \
                 Copy to C:\\ProgramData\\Qlik\\Sense\\{service}\\LocalLogConfig.xml on every node\n     \
                 and restart the Qlik Sense {service} service. -->",
                escape(&target.host)
            );
            xml.push_str("<configuration>\n");
            for appender in &appenders {
                render_appender(&mut xml, appender, target);
            }
            for (logger, refs) in &loggers {
                let _ = writeln!(xml, "  <logger name=\"{logger}\">");
                for name in refs.iter() {
                    let _ = writeln!(xml, "    <appender-ref ref=\"{name}\" />");
                }
                xml.push_str("  </logger>\n");
            }
            xml.push_str("</configuration>\n");
            AppenderFile { service, xml }
        })
        .collect()
}

fn render_appender(xml: &mut String, appender: &Appender, target: &Target) {
    let port = match appender.port {
        Port::Log => target.log_port,
        Port::User => target.user_port,
        Port::Task => target.task_port,
    };
    let _ = writeln!(
        xml,
        "  <appender name=\"{}\" type=\"log4net.Appender.UdpAppender\">",
        appender.name
    );
    // Several StringMatchFilters in a row act as OR; each needs its own element.
    for text in appender.matches {
        let _ = writeln!(
            xml,
            "    <filter type=\"log4net.Filter.StringMatchFilter\">\n      \
             <param name=\"stringToMatch\" value=\"{}\" />\n    </filter>",
            escape(text)
        );
    }
    if !appender.matches.is_empty() {
        xml.push_str("    <filter type=\"log4net.Filter.DenyAllFilter\" />\n");
    }
    if let Some(threshold) = appender.threshold {
        let _ = writeln!(
            xml,
            "    <param name=\"threshold\" value=\"{threshold}\" />"
        );
    }
    let _ = writeln!(
        xml,
        "    <param name=\"remoteAddress\" value=\"{}\" />\n    \
         <param name=\"remotePort\" value=\"{port}\" />\n    \
         <param name=\"encoding\" value=\"utf-8\" />\n    \
         <layout type=\"log4net.Layout.PatternLayout\">",
        escape(&target.host)
    );
    for (name, class) in CONVERTERS {
        if appender.pattern.contains(&format!("%{name}")) {
            let _ = writeln!(
                xml,
                "      <converter>\n        <param name=\"name\" value=\"{name}\" />\n        \
                 <param name=\"type\" value=\"Qlik.Sense.Logging.log4net.Layout.Pattern.{class}\" />\n      \
                 </converter>"
            );
        }
    }
    let _ = writeln!(
        xml,
        "      <param name=\"conversionpattern\" value=\"{}\" />\n    </layout>\n  </appender>",
        escape(&appender.pattern)
    );
}

/// Escapes text for an XML attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{ParseConfig, Parser};

    fn target() -> Target {
        Target {
            host: "herald.corp.local".into(),
            log_port: 9996,
            user_port: 9997,
            task_port: 9998,
        }
    }

    /// Renders a conversion pattern the way log4net would, with sample values.
    fn render(pattern: &str) -> String {
        let guid = "e7af59a0-c243-480d-9571-08727551a66f";
        let mut out = pattern
            .replace("%rownum{9999}", "17")
            .replace("%longIso8601date", "20240519T120312.114+0200")
            .replace("%date", "2024-05-19 12:03:12,114")
            .replace("%level", "WARN")
            .replace("%hostname", "sense1")
            .replace("%logger", "System.Scheduler")
            .replace("%user", "LAB\\svc")
            .replace("%encodedmessage", "Something; happened")
            .replace("%encodedexception", "")
            .replace("%message", "Max retries reached; giving up");
        while let Some(start) = out.find("%property{") {
            let end = start + out[start..].find('}').unwrap();
            let name = &out[start + "%property{".len()..end];
            let value = match name {
                n if n.ends_with("Id") && n != "UserId" && n != "ProxySessionId" => guid,
                "User" => "LAB\\goran",
                "ProcessTime" | "WorkTime" | "NetRAM" | "PeakRAM" | "Handle" => "12",
                _ => "x",
            };
            out.replace_range(start..=end, value);
        }
        out
    }

    #[test]
    fn every_generated_pattern_parses() {
        let mut parser = Parser::new(&ParseConfig::default()).unwrap();
        let mut count = 0;
        for Service {
            name: service,
            appenders,
            ..
        } in services()
        {
            for appender in appenders {
                let datagram = render(&appender.pattern);
                parser
                    .parse(
                        datagram.as_bytes(),
                        "10.0.0.5:1".parse().unwrap(),
                        jiff::Timestamp::UNIX_EPOCH,
                    )
                    .unwrap_or_else(|err| panic!("{service} {}: {err}: {datagram}", appender.name));
                count += 1;
            }
        }
        assert_eq!(count, 11);
    }

    #[test]
    fn files_are_balanced_and_reference_declared_appenders() {
        for file in generate(&target()) {
            let opened = file.xml.matches("<appender ").count();
            assert_eq!(
                opened,
                file.xml.matches("</appender>").count(),
                "{}",
                file.service
            );
            assert_eq!(
                file.xml.matches("<logger ").count(),
                file.xml.matches("</logger>").count()
            );
            for reference in file.xml.split("<appender-ref ref=\"").skip(1) {
                let name = &reference[..reference.find('"').unwrap()];
                assert!(
                    file.xml.contains(&format!("<appender name=\"{name}\"")),
                    "{}: {name} is not declared",
                    file.service
                );
            }
            assert!(file.xml.contains("value=\"herald.corp.local\""));
        }
    }

    #[test]
    fn each_match_text_gets_its_own_filter() {
        let scheduler = generate(&target())
            .into_iter()
            .find(|f| f.service == "Scheduler")
            .unwrap();
        assert_eq!(scheduler.xml.matches("StringMatchFilter").count(), 6);
        assert!(scheduler.xml.contains("value=\"9998\""));
    }

    #[test]
    fn host_is_escaped() {
        let mut target = target();
        target.host = "a\"b<c>".into();
        let xml = &generate(&target)[0].xml;
        assert!(xml.contains("value=\"a&quot;b&lt;c&gt;\""));
    }
}
