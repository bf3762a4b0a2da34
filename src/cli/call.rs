//! `fedreg call`: any method of a running server, with a JSON request and
//! JSON answers, for operators without grpcurl.
//!
//! It knows only what the server's reflection service tells it (the
//! services, their methods and the messages' types), as a generic client in
//! any language would: `list` names the services, `list SERVICE` its
//! methods, `describe SYMBOL` a service, method or message, and
//! `SERVICE/METHOD` calls a method, unary or server-streaming, printing each
//! answer as JSON (protobuf's JSON mapping, as grpcurl prints it).

use std::collections::HashSet;
use std::path::Path;

use clap::Args;
use futures_util::StreamExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor, SerializeOptions,
};
use prost_types::FileDescriptorProto;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use super::CliError;
use super::client::{ClientArgs, Server};
use crate::client::Authed;
use crate::error::Error;

/// A request header: its name and value.
type Header = (
    MetadataKey<tonic::metadata::Ascii>,
    MetadataValue<tonic::metadata::Ascii>,
);

/// Options of `fedreg call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The request, as JSON (field names as in the .proto or in
    /// lowerCamelCase, enums by name); `{}` when left out.
    #[arg(short = 'd', long = "data", value_name = "JSON")]
    pub data: Option<String>,
    /// A request header, `NAME: VALUE` (repeatable); an `authorization`
    /// header replaces the admin token.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// `list` (the services), `list SERVICE` (its methods), `describe
    /// SYMBOL` (a service, method or message), or the method to call:
    /// `SERVICE/METHOD`, e.g. `fedreg.v1.RegistryService/ListSites`.
    #[arg(required = true, num_args = 1..=2, value_name = "WHAT")]
    pub what: Vec<String>,
}

/// Runs `fedreg call`.
pub async fn call(data_dir: &Path, client: &ClientArgs, args: CallArgs) -> Result<(), CliError> {
    let headers = parse_headers(&args.headers)?;
    // An `authorization` header given here wins over the admin token.
    let server = Server::connect(client, data_dir).await?;
    let channel = server.client.channel();
    let mut reflection = Reflection::new(channel.clone());
    match (args.what[0].as_str(), args.what.get(1)) {
        ("list", None) => {
            for service in reflection.services().await.map_err(|s| server.fail(s))? {
                println!("{service}");
            }
        }
        ("list", Some(service)) => {
            let pool = reflection
                .pool_for(service)
                .await
                .map_err(|s| server.fail(s))?;
            let service = pool
                .get_service_by_name(service)
                .ok_or_else(|| unknown("service", service))?;
            for method in service.methods() {
                println!("{}", method.full_name());
            }
        }
        ("describe", Some(symbol)) => {
            let pool = reflection
                .pool_for(symbol)
                .await
                .map_err(|s| server.fail(s))?;
            print!("{}", describe(&pool, symbol)?);
        }
        (method, None) if method.contains('/') => {
            let (service, name) = method.split_once('/').unwrap_or_default();
            let pool = reflection
                .pool_for(service)
                .await
                .map_err(|s| server.fail(s))?;
            let method = pool
                .get_service_by_name(service)
                .ok_or_else(|| unknown("service", service))?
                .methods()
                .find(|m| m.name() == name)
                .ok_or_else(|| unknown("method", method))?;
            let request = request(&method, args.data.as_deref().unwrap_or("{}"))?;
            invoke(channel, &method, request, headers)
                .await
                .map_err(|s| server.fail(s))?;
        }
        _ => {
            return Err(Error::invalid(
                "what",
                args.what.join(" "),
                "expected `list`, `list SERVICE`, `describe SYMBOL` or `SERVICE/METHOD`",
            )
            .into());
        }
    }
    Ok(())
}

/// `NAME: VALUE` headers as metadata.
fn parse_headers(headers: &[String]) -> Result<Vec<Header>, Error> {
    headers
        .iter()
        .map(|header| {
            let bad = |why: &str| Error::invalid("header", header, why.to_owned());
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| bad("expected `NAME: VALUE`"))?;
            let name = MetadataKey::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| bad("not a valid header name"))?;
            let value = value
                .trim()
                .parse()
                .map_err(|_| bad("not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// The error for a name the server's reflection does not know.
fn unknown(what: &'static str, name: &str) -> Error {
    Error::invalid(what, name, "the server does not serve it")
}

/// `data` as a request of `method`.
fn request(method: &MethodDescriptor, data: &str) -> Result<DynamicMessage, Error> {
    let mut json = serde_json::Deserializer::from_str(data);
    let message = DynamicMessage::deserialize(method.input(), &mut json)
        .and_then(|m| json.end().map(|()| m))
        .map_err(|e| {
            Error::invalid(
                "data",
                data,
                format!("not a {}: {e}", method.input().full_name()),
            )
        })?;
    Ok(message)
}

/// Calls `method` with `request` and prints every answer as JSON.
async fn invoke(
    channel: Authed,
    method: &MethodDescriptor,
    request: DynamicMessage,
    headers: Vec<Header>,
) -> Result<(), Status> {
    if method.is_client_streaming() {
        return Err(Status::unimplemented(format!(
            "{} streams its requests; `fedreg call` sends one",
            method.full_name()
        )));
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(crate::error::chain(&e)))?;
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name())
        .parse()
        .map_err(|_| Status::invalid_argument("not a method path"))?;
    let mut request = tonic::Request::new(request);
    for (name, value) in headers {
        request.metadata_mut().insert(name, value);
    }
    let codec = DynamicCodec(method.output());
    if method.is_server_streaming() {
        let mut answers = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        while let Some(answer) = answers.next().await {
            print_json(&answer?);
        }
    } else {
        print_json(grpc.unary(request, path, codec).await?.get_ref());
    }
    Ok(())
}

/// Prints `message` as indented JSON, as protobuf's JSON mapping spells it.
fn print_json(message: &DynamicMessage) {
    let mut out = Vec::new();
    let mut json = serde_json::Serializer::pretty(&mut out);
    message
        .serialize_with_options(&mut json, &SerializeOptions::new())
        .expect("a message serializes to JSON");
    println!("{}", String::from_utf8_lossy(&out));
}

/// A service, method or message in a few lines: a service's methods with
/// their types, a message's fields with their numbers.
fn describe(pool: &DescriptorPool, symbol: &str) -> Result<String, Error> {
    let mut out = String::new();
    if let Some(service) = pool.get_service_by_name(symbol) {
        out.push_str(&format!("{} is a service:\n", service.full_name()));
        for method in service.methods() {
            out.push_str(&format!("  {}\n", signature(&method)));
        }
    } else if let Some(message) = pool.get_message_by_name(symbol) {
        out.push_str(&format!("{} is a message:\n", message.full_name()));
        for field in message.fields() {
            let label = if field.is_list() { "repeated " } else { "" };
            out.push_str(&format!(
                "  {label}{:?} {} = {};\n",
                field.kind(),
                field.name(),
                field.number()
            ));
        }
    } else if let Some(method) = symbol.rsplit_once('.').and_then(|(service, name)| {
        pool.get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
    }) {
        out.push_str(&format!(
            "{} is a method:\n  {}\n",
            method.full_name(),
            signature(&method)
        ));
    } else {
        return Err(unknown("symbol", symbol));
    }
    Ok(out)
}

/// `rpc Name(Input) returns (stream Output)`.
fn signature(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "rpc {}({}{}) returns ({}{})",
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

/// The server's reflection service (v1), asked one question at a time.
struct Reflection {
    client: ServerReflectionClient<Authed>,
}

impl Reflection {
    fn new(channel: Authed) -> Reflection {
        Reflection {
            client: ServerReflectionClient::new(channel),
        }
    }

    /// Asks one question.
    async fn ask(&mut self, question: MessageRequest) -> Result<MessageResponse, Status> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(question),
        };
        let mut answers = self
            .client
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let answer: ServerReflectionResponse = answers
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the reflection service did not answer"))?;
        match answer.message_response {
            Some(MessageResponse::ErrorResponse(e)) => {
                Err(Status::new(Code::from(e.error_code), e.error_message))
            }
            Some(response) => Ok(response),
            None => Err(Status::internal("an empty reflection answer")),
        }
    }

    /// The names of the services the server serves.
    async fn services(&mut self) -> Result<Vec<String>, Status> {
        match self
            .ask(MessageRequest::ListServices(String::new()))
            .await?
        {
            MessageResponse::ListServicesResponse(list) => {
                Ok(list.service.into_iter().map(|s| s.name).collect())
            }
            _ => Err(Status::internal("reflection answered another question")),
        }
    }

    /// The types around `symbol` (a service, method or message, and the
    /// prefix before `/` of a method path): its file and the files it
    /// imports, with the well-known types.
    async fn pool_for(&mut self, symbol: &str) -> Result<DescriptorPool, Status> {
        let mut pool = DescriptorPool::global();
        let mut files = self.files_containing(symbol).await?;
        let mut seen: HashSet<String> = files.iter().map(|f| f.name().to_owned()).collect();
        // Imports the answer left out, asked for by name.
        let mut missing: Vec<String> = Vec::new();
        loop {
            for file in &files {
                for import in &file.dependency {
                    if pool.get_file_by_name(import).is_none() && seen.insert(import.clone()) {
                        missing.push(import.clone());
                    }
                }
            }
            let Some(name) = missing.pop() else { break };
            files.extend(self.files(MessageRequest::FileByFilename(name)).await?);
        }
        files.retain(|f| pool.get_file_by_name(f.name()).is_none());
        pool.add_file_descriptor_protos(files)
            .map_err(|e| Status::internal(format!("the server's descriptors: {e}")))?;
        Ok(pool)
    }

    /// The files defining `symbol`, or its service for a method.
    async fn files_containing(&mut self, symbol: &str) -> Result<Vec<FileDescriptorProto>, Status> {
        let symbol = symbol.split('/').next().unwrap_or(symbol);
        match self
            .files(MessageRequest::FileContainingSymbol(symbol.to_owned()))
            .await
        {
            Err(status) if status.code() == Code::NotFound => {
                // `Service.Method`: reflection knows the service.
                match symbol.rsplit_once('.') {
                    Some((service, _)) => {
                        self.files(MessageRequest::FileContainingSymbol(service.to_owned()))
                            .await
                    }
                    None => Err(status),
                }
            }
            answer => answer,
        }
    }

    /// The file descriptors answering `question`.
    async fn files(
        &mut self,
        question: MessageRequest,
    ) -> Result<Vec<FileDescriptorProto>, Status> {
        match self.ask(question).await? {
            MessageResponse::FileDescriptorResponse(found) => found
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    FileDescriptorProto::decode(bytes.as_slice()).map_err(|e| {
                        Status::internal(format!("a file descriptor that does not decode: {e}"))
                    })
                })
                .collect(),
            _ => Err(Status::internal("reflection answered another question")),
        }
    }
}

/// Encodes requests and decodes answers of a type known at run time.
struct DynamicCodec(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicCodec;
    type Decoder = DynamicCodec;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicCodec(self.0.clone())
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicCodec(self.0.clone())
    }
}

impl Encoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))
    }
}

impl Decoder for DynamicCodec {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding the answer: {e}")))
    }
}
