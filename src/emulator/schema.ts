// Builds the executable schema: Kana's SDL from schema.graphql, its two custom scalars, the resolvers.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  buildSchema,
  GraphQLObjectType,
  GraphQLScalarType,
  type GraphQLSchema,
  Kind,
  type ValueNode,
  valueFromASTUntyped,
} from 'graphql';
import type { ResolverMap } from './resolvers.js';

/** Kana's schema text, read beside this module (the build copies schema.graphql next to the bundle). */
export function loadSchemaText(): string {
  return readFileSync(fileURLToPath(new URL('./schema.graphql', import.meta.url)), 'utf8');
}

function toIsoDateTime(value: unknown): string {
  const date =
    value instanceof Date ? value : typeof value === 'number' || typeof value === 'string' ? new Date(value) : null;
  if (date === null || Number.isNaN(date.getTime())) {
    throw new TypeError(`DateTime cannot represent a non date-time value: ${String(value)}`);
  }
  return date.toISOString();
}

/** DateTime: UTC ISO-8601 on the wire (API.md §4). Inputs must be ISO strings; they come back normalized. */
function defineDateTime(scalar: GraphQLScalarType): void {
  scalar.serialize = toIsoDateTime;
  scalar.parseValue = (value) => {
    if (typeof value !== 'string') throw new TypeError(`DateTime must be an ISO-8601 string, got: ${String(value)}`);
    return toIsoDateTime(value);
  };
  scalar.parseLiteral = (ast: ValueNode) => {
    if (ast.kind !== Kind.STRING) throw new TypeError('DateTime must be an ISO-8601 string literal');
    return toIsoDateTime(ast.value);
  };
}

/** JSON: any JSON value, passed through as is (API.md §4). */
function defineJson(scalar: GraphQLScalarType): void {
  scalar.serialize = (value) => value;
  scalar.parseValue = (value) => value;
  scalar.parseLiteral = (ast, variables) => valueFromASTUntyped(ast, variables);
}

function scalarNamed(schema: GraphQLSchema, name: string): GraphQLScalarType {
  const type = schema.getType(name);
  if (!(type instanceof GraphQLScalarType)) throw new Error(`schema.graphql has no scalar ${name}`);
  return type;
}

/**
 * Parses the SDL and attaches resolvers to the built schema's own fields, so every request is
 * validated and executed by graphql-js against exactly the documented schema. A resolver for a
 * field the schema does not have is a bug and fails here, at start-up.
 */
export function buildExecutableSchema(sdl: string, resolvers: ResolverMap): GraphQLSchema {
  const schema = buildSchema(sdl);
  defineDateTime(scalarNamed(schema, 'DateTime'));
  defineJson(scalarNamed(schema, 'JSON'));
  for (const [typeName, fieldResolvers] of Object.entries(resolvers)) {
    const type = schema.getType(typeName);
    if (!(type instanceof GraphQLObjectType)) throw new Error(`schema.graphql has no object type ${typeName}`);
    const fields = type.getFields();
    for (const [fieldName, resolve] of Object.entries(fieldResolvers)) {
      const field = fields[fieldName];
      if (field === undefined) throw new Error(`schema.graphql has no field ${typeName}.${fieldName}`);
      field.resolve = resolve;
    }
  }
  return schema;
}
